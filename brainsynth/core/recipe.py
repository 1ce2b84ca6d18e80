"""Recipes: YAML -> a validated, fully resolved `Recipe`.

* YAML is read with ``yaml.safe_load`` only; a ``!!python/...`` tag is an error.
* ``extends: base.yaml`` (one path, relative to the recipe) is deep-merged under the recipe:
  mappings merge key by key, anything else is replaced. A base may extend another; cycles are
  detected. A list of bases is refused, so that their order never decides a key silently.
* ``--set a.b=value`` overrides any key; the value is parsed as YAML (``8`` is an int,
  ``[1, 2]`` a list, ``null`` None).
* Every section is validated against its task's declaration and every ``{name: ...}`` block
  against its component's schema before any work starts. Errors name the file, the key path and
  the line.

Relative paths inside a recipe (data tables, run roots) are taken from the working directory.
"""

from __future__ import annotations

import copy
import os
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import RecipeError, RegistryError
from .files import single_component
from .registry import Registry
from .schema import Schema, did_you_mean, dotted
from .task import Section


@dataclasses.dataclass
class Experiment:
    """Where the run lives: ``<root>/<name>/``."""

    name: str
    root: str = "runs"


@dataclasses.dataclass
class Header:
    """Keys every recipe has, whatever its task."""

    task: str
    experiment: Experiment
    mode: str | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero: bool = False
    """Shard optimizer state over ranks (torch's ZeroRedundancyOptimizer) in distributed training."""
    description: str = ""


HEADER = Schema.from_dataclass(Header)


class Origins:
    """Where each key path came from (``file:line`` or ``--set key``), for error messages."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._where: dict[tuple, str] = {}

    def set(self, path: tuple, where: str) -> None:
        self._where[path] = where

    def update(self, other: Origins, prefix: tuple = ()) -> None:
        for path, where in other._where.items():
            self._where[prefix + path] = where

    def within(self, prefix: tuple) -> Origins:
        """The origins of the keys under `prefix`, re-rooted there (for a recipe nested in another)."""
        inner = Origins(self(prefix))
        for path, where in self._where.items():
            if path[: len(prefix)] == prefix:
                inner._where[path[len(prefix) :]] = where
        return inner

    def drop(self, prefix: tuple) -> None:
        for path in [p for p in self._where if p[: len(prefix)] == prefix]:
            del self._where[path]

    def __call__(self, path: tuple) -> str:
        """The origin of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self._where:
                return self._where[path]
            path = path[:-1]
        return self.default


def _line_map(node: yaml.Node, file: str, origins: Origins, path: tuple = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if key_node.tag != "tag:yaml.org,2002:str" else key_node.value
            child = path + (key,)
            origins.set(child, f"{file}:{key_node.start_mark.line + 1}")
            _line_map(value_node, file, origins, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            origins.set(path + (i,), f"{file}:{item.start_mark.line + 1}")
            _line_map(item, file, origins, path + (i,))


def read_yaml(path: Path) -> tuple[dict, Origins]:
    """Safely parse one YAML file into a mapping plus the line of every key."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found.") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc.strerror}).") from None
    origins = Origins(str(path))
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise RecipeError(
            f"{path}:{line}: {exc.problem}. Recipes hold plain data only (numbers, strings, lists, "
            f"mappings); components are chosen by registered name, never by Python tags."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}:{line}: invalid YAML: {problem}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of keys, got {type(data).__name__}.")
    if node is not None:
        _line_map(node, str(path), origins)
    return data, origins


def deep_merge(base: dict, override: Mapping, base_origins: Origins, override_origins: Origins, path: tuple = ()) -> dict:
    """`override` merged onto `base`: mappings merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        child = path + (key,)
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            if child in override_origins._where:
                base_origins.set(child, override_origins._where[child])
            merged[key] = deep_merge(merged[key], value, base_origins, override_origins, child)
        else:
            base_origins.drop(child)
            for p, where in override_origins._where.items():
                if p[: len(child)] == child:
                    base_origins.set(p, where)
            merged[key] = copy.deepcopy(value)
    return merged


def load_raw(path: str | Path, _stack: tuple[Path, ...] = ()) -> tuple[dict, Origins]:
    """Read a recipe and everything it extends, merged, with the origin of every key."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _stack:
        chain = " -> ".join(str(p) for p in _stack + (resolved,))
        raise RecipeError(f"{path}: 'extends' forms a cycle: {chain}. Remove one of the links.")
    data, origins = read_yaml(path)
    if "extends" not in data:
        return data, origins
    base = data.pop("extends")
    if not isinstance(base, str) or not base.strip():
        got = "nothing" if base is None else f"{type(base).__name__} {base!r}"
        raise RecipeError(
            f"{origins(('extends',))}: extends: expected one base recipe path, got {got}. To combine "
            f"several bases, let one extend the other (each recipe names a single base)."
        )
    base_path = Path(os.path.normpath(path.parent / base))
    if not base_path.exists():
        raise RecipeError(
            f"{origins(('extends',))}: extends: base recipe '{base}' not found "
            f"(looked for {base_path}; paths are relative to the extending recipe)."
        )
    base_data, base_origins = load_raw(base_path, _stack + (resolved,))
    merged_origins = Origins(str(path))
    merged = deep_merge({}, base_data, merged_origins, base_origins)
    origins.drop(("extends",))
    merged = deep_merge(merged, data, merged_origins, origins)
    merged_origins.default = str(path)
    return merged, merged_origins


def parse_override(text: str) -> tuple[tuple, Any]:
    """``a.b.c=value`` -> (("a", "b", "c"), value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text}: expected KEY.PATH=VALUE, for example --set train.epochs=10.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {text}: the value is not valid YAML ({exc}).") from None
    path = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    return path, value


def apply_override(data: dict, path: tuple, value: Any, origins: Origins) -> None:
    target: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(target, list) and isinstance(part, int) and part < len(target):
            target = target[part]
            continue
        if not isinstance(target, dict):
            raise RecipeError(f"--set {dotted(path)}: '{dotted(path[:i])}' is not a mapping.")
        if not isinstance(target.get(part), (dict, list)):
            target[part] = {}
        target = target[part]
    last = path[-1]
    if isinstance(target, list) and isinstance(last, int) and last < len(target):
        target[last] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise RecipeError(f"--set {dotted(path)}: '{dotted(path[:-1])}' is not a mapping.")
    origins.drop(path)
    origins.set(path, f"--set {dotted(path)}")


@dataclasses.dataclass
class Recipe:
    """A validated recipe: every section resolved, every default filled in."""

    data: dict
    source: str
    origins: Origins

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def mode(self) -> str:
        return self.data["mode"]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def text(self) -> str:
        """The resolved recipe as YAML (what ``validate --show`` prints and runs save)."""
        return dump_yaml(self.data)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # write shared values out in full: no &id001 anchors in saved recipes


_Dumper.add_representer(tuple, lambda dumper, value: dumper.represent_list(list(value)))


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None)


def _validate_component(
    registry: Registry, kind: str, block: Any, path: tuple, origins: Origins, default: str | None
) -> dict:
    if block is None:
        block = {}
    if isinstance(block, str):  # shorthand: `ordering: raster_scan`
        block = {"name": block}
    if not isinstance(block, Mapping):
        raise RecipeError(
            f"{origins(path)}: {dotted(path)}: expected a {kind} block such as "
            f"{{name: ..., ...}}, got {type(block).__name__}."
        )
    name = block.get("name", default)
    if name is None:
        raise RecipeError(
            f"{origins(path)}: {dotted(path)}: missing required value 'name' (the {kind} to use). "
            f"Available: {', '.join(registry.names(kind)) or '(none installed)'}."
        )
    try:
        component = registry.get(kind, name)
    except RegistryError as exc:
        raise RecipeError(f"{origins(path + ('name',))}: {dotted(path + ('name',))}: {exc}") from None
    def nested(inner_kind: str, value: Any, inner_path: tuple) -> dict:
        return _validate_component(registry, inner_kind, value, inner_path, origins, None)

    params = component.schema.validate(
        block, path, origins, owner=f"{kind} '{name}'", ignore=("name",), nested=nested
    )
    return {"name": name, **params}


def validate(data: dict, registry: Registry, origins: Origins, source: str, mode: str | None = None) -> Recipe:
    """Check every key of a merged recipe; return it resolved with defaults."""
    data = copy.deepcopy(data)
    if mode is not None:
        data["mode"] = mode
        origins.set(("mode",), "--mode")
    task_name = data.get("task")
    if task_name is None:
        raise RecipeError(
            f"{source}: missing required value 'task'. Available tasks: "
            f"{', '.join(registry.names('task'))}."
        )
    try:
        task_component = registry.get("task", task_name)
    except RegistryError as exc:
        raise RecipeError(f"{origins(('task',))}: task: {exc}") from None
    sections: dict[str, Section] = task_component.factory.sections
    header_keys = set(HEADER.parameters)
    for key in data:
        if key not in header_keys and key not in sections:
            known = sorted(header_keys | set(sections))
            raise RecipeError(
                f"{origins((key,))}: {key}: unknown key for task '{task_name}'."
                f"{did_you_mean(str(key), known)} Known keys: {', '.join(known)}."
            )
    header = HEADER.validate({k: v for k, v in data.items() if k in header_keys}, (), origins, owner="recipe")
    single_component(header["experiment"]["name"], "experiment.name", origins(("experiment", "name")))
    modes = task_component.factory.modes
    if header["mode"] is None:
        header["mode"] = modes[0]
    if header["mode"] not in modes:
        raise RecipeError(
            f"{origins(('mode',))}: mode: task '{task_name}' has no mode '{header['mode']}'."
            f"{did_you_mean(header['mode'], modes)} Modes: {', '.join(modes)}."
        )
    resolved: dict[str, Any] = dict(header)
    for key, section in sections.items():
        path = (key,)
        present = key in data
        if not present and section.required and not section.default:
            raise RecipeError(
                f"{source}: missing required section '{key}' for task '{task_name}'"
                f"{' (' + section.doc + ')' if section.doc else ''}."
            )
        value = data.get(key)
        if section.kind is not None:
            if section.many:
                items = value if value is not None else []
                if not isinstance(items, list):
                    raise RecipeError(f"{origins(path)}: {key}: expected a list of {section.kind} blocks.")
                resolved[key] = [
                    _validate_component(registry, section.kind, item, path + (i,), origins, None)
                    for i, item in enumerate(items)
                ]
            elif value is None and not section.required and not section.default:
                resolved[key] = None  # an optional block left out, or written as null
            elif present or section.default:
                resolved[key] = _validate_component(registry, section.kind, value, path, origins, section.default)
            else:
                resolved[key] = None
        elif section.schema is not None:
            if value is None and not present and section.required:
                raise RecipeError(f"{source}: missing required section '{key}'.")
            resolved[key] = Schema.from_dataclass(section.schema).validate(
                value, path, origins, owner=f"'{key}'",
                nested=lambda kind, block, where: _validate_component(registry, kind, block, where, origins, None),
            )
        else:
            resolved[key] = value
    recipe = Recipe(data=resolved, source=source, origins=origins)
    task_component.factory.check_recipe(recipe, registry)
    return recipe


def load_recipe(
    path: str | Path,
    registry: Registry,
    overrides: Sequence[str] = (),
    mode: str | None = None,
) -> Recipe:
    """Read, merge, override and validate a recipe file."""
    data, origins = load_raw(path)
    for text in overrides:
        key_path, value = parse_override(text)
        apply_override(data, key_path, value, origins)
    return validate(data, registry, origins, str(path), mode=mode)


def recipe_from_text(text: str, registry: Registry, source: str) -> Recipe:
    """Validate a recipe saved as text (in a run directory or a checkpoint)."""
    data = yaml.safe_load(text) or {}
    _drop_unset_optimizer_keys(data, registry)
    return validate(data, registry, Origins(source), source)


def _drop_unset_optimizer_keys(data: dict, registry: Registry) -> None:
    """Recipes saved before optimizers and schedules were components wrote every key of one fixed
    schema (``momentum: 0.0`` under adam, ``gamma: null`` under a constant schedule): drop those
    the named component does not take and that were unset, so that older runs still load."""
    try:
        sections = registry.get("task", data.get("task")).factory.sections
    except (RegistryError, AttributeError):
        return  # validate says what is wrong
    for key, section in sections.items():
        if section.kind not in ("optimizer", "lr_schedule") or not isinstance(data.get(key), dict):
            continue
        blocks = [(section.kind, data[key])]
        if isinstance(data[key].get("schedule"), dict):
            blocks.append(("lr_schedule", data[key]["schedule"]))
        for kind, block in blocks:
            try:
                known = registry.get(kind, block.get("name", section.default)).schema.parameters
            except RegistryError:
                continue
            for name in [k for k, v in block.items() if k != "name" and k not in known and v in (None, 0, 0.0)]:
                del block[name]
