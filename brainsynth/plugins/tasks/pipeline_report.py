"""The report at the end of a pipeline: the tokenizer's and the prior's results on one page.

It reads what the stages wrote (the tokenizer's ``metrics.evaluate.json``, the prior's samples
and ``evaluation/``: real brains and the same brains after the tokenizer) and hands it to the report writer; it computes nothing
itself, so a report can be rebuilt from a finished run at no cost.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from brainsynth.core.errors import RunError

REPORT_FOLDER = "report"


@dataclasses.dataclass
class ReportConfig:
    """The ``report`` section of a pipeline."""

    enabled: bool = True
    tokenizer: str | None = "tokenizer"
    """The stage whose ``evaluate`` gives the reconstruction metrics (None: leave them out)."""
    prior: str | None = "prior"
    """The stage whose ``sample`` and ``evaluate`` give the samples and their metrics."""
    split: str = "val"
    """The split whose reconstruction metrics are reported."""
    title: str = "brainsynth report"


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
