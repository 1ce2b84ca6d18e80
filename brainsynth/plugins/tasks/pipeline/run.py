"""The pipeline's ``run`` mode: every stage in each of its modes, in order, then the report if asked."""

from __future__ import annotations

from typing import Any

from brainsynth.core import records, runner
from brainsynth.core.errors import RunError
from brainsynth.core.runner import Run

from .report import report_asked, write_pipeline_report
from .task import plan


def run_mode(run: Run) -> dict[str, Any]:
    """Each stage in each of its modes, in order; then the report, when the recipe names its stages."""
    if run.dist.is_distributed:
        raise RunError(
            "a pipeline runs its stages in one process; under torchrun, run each stage's recipe on its own."
        )
    stages = plan(run.recipe, run.directory, run.registry)
    results: dict[str, Any] = {}
    total = sum(len(s.recipes) for s in stages)
    done = 0
    for stage in stages:
        for recipe in stage.recipes:
            done += 1
            label = f"[{done}/{total}] stage '{stage.name}': {recipe.task} {recipe.mode}"
            finished = stage.directory / f"metrics.{recipe.mode}.json"
            if run.resume and finished.is_file():
                changes = records.changes_since_record(
                    stage.directory, recipe, creating=recipe.mode in runner.CREATING_MODES
                )
                unapplied = f" (it finished with its recorded recipe; not applied: {', '.join(map(str, changes))})"
                run.say(f"{label}: already done, skipped{unapplied if changes else ''}")
                continue
            run.say(f"{label} -> {stage.directory}")
            resume = run.resume and recipe.mode in runner.CREATING_MODES and stage.directory.exists()
            results[f"{stage.name}.{recipe.mode}"] = runner.execute(
                recipe, run.registry, resume=resume, allow_changes=run.allow_changes
            )
    if report_asked(run.recipe["report"]):
        results["report"] = str(write_pipeline_report(run))
    return results
