"""The ``pipeline`` task: several recipes run one after the other, passing run directories along.

A pipeline recipe lists stages; each stage is a recipe (inline, or a file path relative to the
pipeline's file) and the modes to run it in. Stage ``NAME`` runs in ``<pipeline run>/NAME``, and
any string ``{NAME}`` in a later stage's recipe is replaced by that directory, which is how the
prior finds the tokenizer's tokens. Every stage is validated before the first one starts, so a
typo in the last stage costs seconds, not the first stage's training.

``--resume`` continues a pipeline: modes whose ``metrics.<mode>.json`` exists are skipped, and a
stage whose training was interrupted resumes from its last checkpoint. The pipeline's recipe is
compared with its record as a run's is, a stage's keys (``stages.<i>.recipe.<key>``) judged as
that stage's recipe's own; ``--allow-changes`` passes on to the stages.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
from pathlib import Path
from typing import Any

from brainsynth.core import runner
from brainsynth.core.errors import RecipeError
from brainsynth.core.recipe import Recipe, load_raw, validate
from brainsynth.core.runner import Run
from brainsynth.core.schema import Schema
from brainsynth.core.task import Section, Task

from .report import ReportConfig, check_report

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")


@dataclasses.dataclass
class Stage:
    """One entry of ``stages``."""

    name: str
    recipe: dict[str, Any] | str
    """The stage's recipe: a mapping written inline, or a recipe file (relative to this one)."""
    modes: list[str] | None = None
    """Modes to run in order (default: the task's first mode)."""


@dataclasses.dataclass
class PlannedStage:
    name: str
    directory: Path
    recipes: list[Recipe]
    """One validated recipe per mode, in order."""


def _substitute(value: Any, directories: dict[str, Path], where: str) -> Any:
    """Replace ``{stage}`` in strings by that stage's run directory (earlier stages only)."""
    if isinstance(value, dict):
        return {k: _substitute(v, directories, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, directories, where) for v in value]
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in directories:
                raise RecipeError(
                    f"{where}: '{{{name}}}' names no earlier stage; earlier stages: {', '.join(directories) or 'none'}."
                )
            return str(directories[name])

        return PLACEHOLDER.sub(replace, value)
    return value


def plan(recipe: Recipe, directory: Path, registry) -> list[PlannedStage]:
    """Validate every stage's recipe in every mode; nothing runs until all of them pass."""
    base = Path(recipe.source).parent
    directories: dict[str, Path] = {}
    planned = []
    stages = recipe["stages"]
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{recipe.origins(('stages',))}: stages: expected a list of stages ({{name, recipe, modes}}).")
    schema = Schema.from_dataclass(Stage)
    for index, raw in enumerate(stages):
        stage = schema.validate(raw, ("stages", index), recipe.origins, owner="stage")
        name = stage["name"]
        where = recipe.origins(("stages", index, "name"))
        if name in directories:
            raise RecipeError(f"{where}: stages: the name '{name}' is used twice.")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise RecipeError(f"{where}: stages: '{name}' is not a plain name (letters, digits, _ and -).")
        if isinstance(stage["recipe"], str):
            data, origins = load_raw(base / stage["recipe"])
        else:
            data, origins = copy.deepcopy(stage["recipe"]), recipe.origins.within(("stages", index, "recipe"))
        if "experiment" in data:
            raise RecipeError(
                f"{origins(('experiment',))}: stage '{name}': leave 'experiment' out; the pipeline runs the "
                f"stage in {directory / name}."
            )
        data = _substitute(data, directories, f"{where}: stage '{name}'")
        data["experiment"] = {"name": name, "root": str(directory)}
        for key in ("seed", "device", "precision"):
            data.setdefault(key, recipe[key])
        modes = stage["modes"] or [None]
        try:
            recipes = [validate(data, registry, origins, f"{recipe.source} (stage '{name}')", mode=m) for m in modes]
        except RecipeError as exc:
            raise RecipeError(f"stage '{name}': {exc}") from None
        if any(r.task == "pipeline" for r in recipes):
            raise RecipeError(f"{where}: stage '{name}': a pipeline cannot be a stage of a pipeline.")
        planned.append(PlannedStage(name, directory / name, recipes))
        directories[name] = (directory / name).resolve()
    return planned


class PipelineTask(Task):
    """Run recipes one after the other, passing run directories along; report on the stages named."""

    sections = {
        "stages": Section(required=True, doc="the stages, in order: a list of {name, recipe, modes}"),
        "report": Section(schema=ReportConfig, doc="the report of the stages it names, written when every stage is done"),
    }
    modes = ("run", "report")

    @classmethod
    def check_recipe(cls, recipe: Recipe, registry) -> None:
        """Every stage validates in every mode, and the report reads stages that write what it needs."""
        check_report(recipe, plan(recipe, runner.run_directory(recipe), registry))

    def run(self, run: Run) -> dict[str, Any]:
        """Each mode is the module of this package named after it (its `run_mode`), imported when it runs."""
        return importlib.import_module(f"{__package__}.{run.mode}").run_mode(run)
