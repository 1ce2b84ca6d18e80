"""The pipeline's ``report`` mode: the results of the stages the recipe names, on one page.

The ``report`` section names the stages: ``tokenizer``, whose ``evaluate`` gave reconstruction
metrics, and ``prior``, whose ``sample`` and ``evaluate`` gave samples and their metrics; the
pipeline knows no stage by name, and without names it writes no report. It reads what those
stages wrote (the tokenizer's ``metrics.evaluate.json``, the prior's samples and ``evaluation/``:
real brains and the same brains after the tokenizer) and hands it to the report writer; it
computes nothing itself, so ``--mode report`` rebuilds the report of a finished run at no cost.
The ``run`` mode ends with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainsynth.core.errors import RecipeError, RunError
from brainsynth.core.recipe import Recipe
from brainsynth.core.runner import Run

if TYPE_CHECKING:
    from .task import PlannedStage

REPORT_FOLDER = "report"


@dataclasses.dataclass
class ReportConfig:
    """The ``report`` section of a pipeline: which stages it reports on (none named: no report)."""

    enabled: bool = True
    """False: no report, even with stages named."""
    tokenizer: str | None = None
    """The stage whose ``evaluate`` gives the reconstruction metrics (None: leave them out)."""
    prior: str | None = None
    """The stage whose ``sample`` and ``evaluate`` give the samples and their metrics (None: leave them out)."""
    split: str = "val"
    """The split whose reconstruction metrics are reported."""
    title: str = "brainsynth report"


ROLES = ("tokenizer", "prior")
"""The report's keys that name a stage; each such stage must run ``evaluate``."""


def report_asked(config: dict[str, Any]) -> bool:
    """True when the report is on and names at least one stage."""
    return bool(config["enabled"]) and any(config[role] for role in ROLES)


def check_report(recipe: Recipe, stages: Sequence[PlannedStage]) -> None:
    """validate: the report names stages of this pipeline that run ``evaluate``; a ``report`` section
    written without stage names (which used to mean stages 'tokenizer' and 'prior') is refused."""
    config = recipe["report"]
    if not config["enabled"]:
        return
    modes = {stage.name: [r.mode for r in stage.recipes] for stage in stages}
    written = recipe.origins(("report",)) != recipe.origins.default
    if written and not report_asked(config):
        raise RecipeError(
            f"{recipe.origins(('report',))}: report: name the stages it reports on, e.g. report: "
            f"{{tokenizer: <stage>, prior: <stage>}} (stages: {', '.join(modes)}), or write report: {{enabled: false}}."
        )
    for role in ROLES:
        name = config[role]
        if name is None:
            continue
        where = recipe.origins(("report", role))
        if name not in modes:
            raise RecipeError(f"{where}: report.{role}: '{name}' is not a stage of this pipeline; stages: {', '.join(modes)}.")
        if "evaluate" not in modes[name]:
            raise RecipeError(
                f"{where}: report.{role}: stage '{name}' runs {', '.join(map(str, modes[name]))}, not evaluate, "
                "whose results the report shows; add evaluate to its modes."
            )


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunError(f"{path}: missing; the report needs this stage's mode to have run.")
    return json.loads(path.read_text())


def pipeline_report(directory: Path, config: dict[str, Any], recipe_text: str) -> Path:
    """Write ``<directory>/report/`` from the stages' outputs; returns its index.html."""
    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    real, reconstructed, sampled, rows = [], [], [], []
    if config["tokenizer"]:
        stage = directory / config["tokenizer"]
        evaluation = _read_json(stage / "metrics.evaluate.json")
        if config["split"] not in evaluation:
            raise RunError(f"{stage}: the tokenizer was not evaluated on '{config['split']}' (outputs.splits).")
        metrics.update({f"tokenizer_{k}": v for k, v in evaluation[config["split"]].items()})
        notes["tokenizer"] = f"reconstruction metrics: mean over the {config['split']} split ({stage / 'evaluation'})"
    if config["prior"]:
        stage = directory / config["prior"]
        summary = _read_json(stage / "metrics.evaluate.json")
        metrics.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        notes.update(_read_json(stage / "evaluation" / "notes.json"))
        rows = _read_json(stage / "evaluation" / "rows.json")
        files = _read_json(stage / "evaluation" / "files.json")
        real, sampled = [Path(p) for p in files["real"]], [Path(p) for p in files["samples"]]
        reconstructed = [Path(p) for p in files.get("reconstructed", [])]  # the same brains after the tokenizer
    from brainsynth.library.report import ReportInputs, write_report  # matplotlib: only when writing

    inputs = ReportInputs(
        title=config["title"], metrics=metrics, recipe_text=recipe_text, real=real,
        reconstructed=reconstructed, sampled=sampled, morphology=rows, notes=notes,
    )
    return write_report(directory / REPORT_FOLDER, inputs, overwrite=True)


def write_pipeline_report(run: Run) -> Path:
    """The report of this pipeline run (``<run>/report/index.html``), written over an older one."""
    index = pipeline_report(run.directory, run.recipe["report"], run.recipe.text())
    run.say(f"report: {index}")
    return index


def run_mode(run: Run) -> dict[str, Any]:
    """``--mode report``: rebuild the report of a finished pipeline run from its stages' outputs."""
    if not report_asked(run.recipe["report"]):
        raise RecipeError(
            f"{run.recipe.source}: report: no stage to report on; set report.tokenizer and/or report.prior to "
            "stage names (and report.enabled to true)."
        )
    return {"report": str(write_pipeline_report(run))}
