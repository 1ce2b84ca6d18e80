"""``brainsynth sweep``: one run per combination of a grid of recipe keys, and one table of results.

``--grid network.depth=4,8 --grid ordering.name=raster_scan,hilbert_curve`` gives four runs. Each
is an ordinary run of the recipe with the combination's ``--set`` overrides and the experiment
name ``<name>-<suffix>`` (``ukb_transformer-depth4-hilbert_curve``), under the recipe's
``experiment.root``, so any of them can be continued or sampled alone with ``brainsynth run``.

Every combination is validated before the first one starts. A combination whose
``metrics.<mode>.json`` exists is finished and skipped; one whose run was interrupted is resumed
from its last checkpoint; one that fails is recorded as failed and the sweep goes on, ending with
an error. After every combination, ``<root>/<name>-sweep/sweep.csv`` and ``sweep.md`` are
rewritten with the final metrics every mode has written in each run directory. The sweep holds the
lock of that directory while it runs (each run holds its own), so a second start of the same sweep
is refused instead of rewriting the first one's tables with its refusals.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from . import locks
from .errors import BrainsynthError, RecipeError, RunError
from .files import write_bytes_atomic
from .recipe import Recipe, load_recipe
from .registry import Registry
from .runner import CREATING_MODES, run_directory
from .task import Task

RESERVED_KEYS = ("experiment.name", "experiment.root", "mode")
"""Keys the sweep itself decides (the run names, where they live, the mode)."""


@dataclasses.dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2,...``: a dotted recipe key and the YAML text of each value."""

    key: str
    values: tuple[str, ...]


@dataclasses.dataclass
class Combination:
    """One run of the sweep: its experiment name, its settings and its validated recipe."""

    name: str
    settings: tuple[tuple[str, str], ...]
    """(key, YAML text of the value) for every grid axis, in grid order."""
    recipe: Recipe

    @property
    def directory(self) -> Path:
        return run_directory(self.recipe)

    def overrides(self) -> list[str]:
        """The ``--set`` overrides that make this run (the experiment name last)."""
        return [f"{key}={value}" for key, value in self.settings] + [f"experiment.name={self.name}"]

    def finished(self, mode: str) -> bool:
        return (self.directory / f"metrics.{mode}.json").is_file()


@dataclasses.dataclass
class Outcome:
    """What became of a combination in this sweep."""

    status: str
    """``ran``, ``skipped`` (finished before), ``failed`` or ``pending``."""
    error: str = ""


@dataclasses.dataclass
class Sweep:
    """A planned sweep: the recipe, its grid and one validated recipe per combination."""

    recipe_path: str
    mode: str
    modes: tuple[str, ...]
    """Every mode of the recipe's task (the table shows each one's final metrics)."""
    base_name: str
    root: Path
    axes: list[GridAxis]
    overrides: tuple[str, ...]
    combinations: list[Combination]

    @property
    def directory(self) -> Path:
        """Where the tables go: ``<root>/<name>-sweep/``."""
        return self.root / f"{self.base_name}-sweep"


# -- parsing and planning -----------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """Split ``a,b,[1, 2],'x,y'`` at the commas outside brackets, braces and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    if quote or depth:
        raise RecipeError(f"--grid ...={text}: unbalanced quotes or brackets in the values.")
    return parts


def parse_grid(text: str) -> GridAxis:
    """``network.depth=4,8`` -> GridAxis("network.depth", ("4", "8")), with clear errors."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    example = "for example --grid network.depth=4,8"
    if not sep or not key:
        raise RecipeError(f"--grid {text}: expected KEY.PATH=VALUE1,VALUE2,..., {example}.")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise RecipeError(f"--grid {text}: '{key}' is not a dotted recipe key, {example}.")
    if key in RESERVED_KEYS:
        raise RecipeError(
            f"--grid {text}: the sweep sets {key} itself (one run per combination); "
            + ("use --mode." if key == "mode" else "choose the base with --set instead.")
        )
    values = split_values(raw)
    if not raw.strip() or any(not v for v in values):
        raise RecipeError(f"--grid {text}: empty value; list the values separated by commas, {example}.")
    for value in values:
        try:
            yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--grid {key}: value {value!r} is not valid YAML ({exc}).") from None
    parsed = [json.dumps(yaml.safe_load(v), sort_keys=True) for v in values]
    repeated = sorted({v for v, p in zip(values, parsed) if parsed.count(p) > 1})
    if repeated:
        raise RecipeError(f"--grid {key}: value(s) {', '.join(repeated)} listed more than once.")
    return GridAxis(key, tuple(values))


def _slug(value_text: str) -> str:
    value = yaml.safe_load(value_text)
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.+]+", "_", text).strip("_") or "empty"


def run_suffix(settings: Sequence[tuple[str, str]]) -> str:
    """A readable name part per setting: the value for ``*.name`` keys, else key part + value."""
    parts = []
    for key, value in settings:
        words = [w for w in key.split(".") if not w.isdigit()]
        last = words[-1] if words else key
        parts.append(_slug(value) if last == "name" else f"{last}{_slug(value)}")
    return "-".join(parts)


def plan(
    recipe_path: str,
    grid: Sequence[str],
    registry: Registry,
    overrides: Sequence[str] = (),
    mode: str | None = None,
    check_models: bool = True,
) -> Sweep:
    """Parse the grid and validate every combination; nothing runs and nothing is written.

    With `check_models`, each combination's models are also built without weights (the task's
    ``--dry-run``), so a setting the network refuses (an odd rotary size, a grid the tokenizer
    cannot divide) stops the sweep before its first run rather than in the middle.
    """
    if not grid:
        raise RecipeError("sweep: give at least one --grid KEY=VALUE1,VALUE2 (for example --grid network.depth=4,8).")
    axes = [parse_grid(text) for text in grid]
    keys = [axis.key for axis in axes]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise RecipeError(f"--grid {', '.join(twice)}: one --grid per key; list all its values in it.")
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key in keys:
            raise RecipeError(f"--set {text}: {key} is also swept by --grid; keep one of them.")
    base = load_recipe(recipe_path, registry, overrides=overrides, mode=mode)
    base_name, root = base["experiment"]["name"], Path(base["experiment"]["root"])
    combinations: list[Combination] = []
    names: set[str] = set()
    for values in product(*(axis.values for axis in axes)):
        settings = tuple(zip(keys, values))
        name = f"{base_name}-{run_suffix(settings)}"
        if name in names:
            name = f"{name}-{len(combinations) + 1}"
        names.add(name)
        sets = [*overrides, *(f"{k}={v}" for k, v in settings), f"experiment.name={name}"]
        try:
            recipe = load_recipe(recipe_path, registry, overrides=sets, mode=mode)
        except BrainsynthError as exc:
            described = ", ".join(f"{k}={v}" for k, v in settings)
            raise RecipeError(f"sweep combination {described}: {exc}") from None
        if check_models:
            _check_models(recipe, registry, settings)
        combinations.append(Combination(name, settings, recipe))
    task = registry.get("task", base.task).factory
    sweep = Sweep(recipe_path, base.mode, tuple(task.modes), base_name, root, axes, tuple(overrides), combinations)
    if sweep.directory.name in names:
        raise RecipeError(f"--grid: a run would be named {sweep.directory.name}, the folder of the sweep's tables; rename a value.")
    if sweep.mode not in CREATING_MODES:
        missing = [c.name for c in combinations if not c.directory.is_dir()]
        if missing:
            raise RunError(
                f"sweep --mode {sweep.mode} works inside trained runs, and {len(missing)} do not exist under "
                f"{root}: {', '.join(missing)}. Run the sweep in its training mode first, with the same --grid."
            )
    return sweep


def _check_models(recipe: Recipe, registry: Registry, settings: Sequence[tuple[str, str]]) -> None:
    task = registry.get("task", recipe.task).build({})
    if type(task).dry_run is Task.dry_run:
        return  # the task cannot build its models without running
    try:
        task.dry_run(recipe, registry)
    except BrainsynthError as exc:
        described = ", ".join(f"{k}={v}" for k, v in settings)
        raise RecipeError(f"sweep combination {described}: {exc}") from None


# -- running ------------------------------------------------------------------------------------
Runner = Callable[[Combination, bool], None]
"""Runs one combination (resume flag given); raises on failure."""


def run_sweep(sweep: Sweep, run_one: Runner, echo: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Run every unfinished combination in order; the tables are rewritten after each one.

    Refused with a `RunError` naming the holder while another sweep of the same name runs; nothing
    is written then.
    """
    created = not sweep.directory.exists()
    sweep.directory.mkdir(parents=True, exist_ok=True)
    try:
        lock = locks.acquire(sweep.directory, "sweep", say=echo)
    except BaseException:
        if created:
            shutil.rmtree(sweep.directory, ignore_errors=True)
        raise
    try:
        return _run_combinations(sweep, run_one, echo)
    finally:
        lock.release()


def _run_combinations(sweep: Sweep, run_one: Runner, echo: Callable[[str], None]) -> dict[str, Outcome]:
    outcomes = {c.name: Outcome("pending") for c in sweep.combinations}
    total = len(sweep.combinations)
    for number, combination in enumerate(sweep.combinations, start=1):
        label = f"[{number}/{total}] {combination.name}"
        if combination.finished(sweep.mode):
            outcomes[combination.name] = Outcome("skipped")
            echo(f"{label}: finished before ({combination.directory / f'metrics.{sweep.mode}.json'}), skipped")
            continue
        resume = sweep.mode in CREATING_MODES and combination.directory.is_dir()
        echo(f"{label}: {' '.join('--set ' + o for o in combination.overrides())}" + (" (resuming)" if resume else ""))
        start = time.perf_counter()
        try:
            run_one(combination, resume)
        except BrainsynthError as exc:
            outcomes[combination.name] = Outcome("failed", str(exc))
            echo(f"{label}: failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug in one run must not stop the others
            outcomes[combination.name] = Outcome("failed", f"{type(exc).__name__}: {exc}")
            echo(f"{label}: failed with an unexpected error:\n{traceback.format_exc()}")
        else:
            if combination.finished(sweep.mode):
                outcomes[combination.name] = Outcome("ran")
                echo(f"{label}: done in {time.perf_counter() - start:.1f} s")
            else:
                outcomes[combination.name] = Outcome("failed", f"no metrics.{sweep.mode}.json was written")
                echo(f"{label}: failed: the run wrote no metrics.{sweep.mode}.json")
        write_tables(sweep, outcomes)
    write_tables(sweep, outcomes)
    return outcomes


# -- tables -------------------------------------------------------------------------------------
def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value


def final_metrics(directory: Path, modes: Sequence[str]) -> dict[str, Any]:
    """``{mode.metric: value}`` from every ``metrics.<mode>.json`` of a run directory."""
    found: dict[str, Any] = {}
    for mode in modes:
        path = directory / f"metrics.{mode}.json"
        if not path.is_file():
            continue
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            found[f"{mode}.unreadable"] = str(exc)
            continue
        _flatten(values, mode, found)
    return found


def table_rows(sweep: Sweep, outcomes: dict[str, Outcome]) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and one row per combination: run, status, the grid values, the metrics, error."""
    rows, metric_columns = [], []
    for combination in sweep.combinations:
        outcome = outcomes.get(combination.name, Outcome("pending"))
        metrics = final_metrics(combination.directory, sweep.modes)
        for column in metrics:
            if column not in metric_columns:
                metric_columns.append(column)
        row = {"run": combination.name, "status": outcome.status}
        row.update({key: value for key, value in combination.settings})
        row.update(metrics)
        row["error"] = outcome.error.splitlines()[0] if outcome.error else ""
        rows.append(row)
    columns = ["run", "status", *(axis.key for axis in sweep.axes), *metric_columns, "error"]
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render_markdown(sweep: Sweep, columns: list[str], rows: list[dict[str, Any]]) -> str:
    counts = {status: sum(r["status"] == status for r in rows) for status in ("ran", "skipped", "failed", "pending")}
    command = f"brainsynth sweep {sweep.recipe_path}" + "".join(
        f" --grid {axis.key}={','.join(axis.values)}" for axis in sweep.axes
    ) + "".join(f" --set {o}" for o in sweep.overrides) + f" --mode {sweep.mode}"
    lines = [
        f"# Sweep of {sweep.recipe_path}",
        "",
        f"`{command}`",
        "",
        f"{len(rows)} runs under `{sweep.root}`: "
        + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        + ". Metrics are each run's final `metrics.<mode>.json`, one column per mode and metric.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def write_tables(sweep: Sweep, outcomes: dict[str, Outcome]) -> Path:
    """Rewrite ``sweep.csv`` and ``sweep.md`` in the sweep's directory; returns the directory."""
    columns, rows = table_rows(sweep, outcomes)
    sweep.directory.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(sweep.directory / "sweep.csv", buffer.getvalue().encode())
    write_bytes_atomic(sweep.directory / "sweep.md", render_markdown(sweep, columns, rows).encode())
    return sweep.directory
