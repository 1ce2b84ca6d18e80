"""The prior as trained, for every mode after ``train`` and for ``brainsynth.load``.

The checkpoint is read once: its recorded ordering and conditioning mapping go to the assembler,
and the same payload then gives the weights.
"""

from __future__ import annotations

from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint, same_task
from brainsynth.core.errors import RunError
from brainsynth.core.runner import Run
from brainsynth.library.prior_assembly import PriorParts, build_prior_parts


def trained_prior(run: Run, checkpoint: str) -> PriorParts:
    """The prior as trained: ordering and conditioning mapping from the checkpoint, then weights."""
    path = run.checkpoints / f"{checkpoint}.pt"
    if not path.is_file():
        raise RunError(f"{path}: no '{checkpoint}' checkpoint in this run; train it first (--mode train).")
    saved = read_checkpoint(path)
    if not same_task(saved.get("task"), run.recipe.task):
        raise RunError(f"{path}: a '{saved.get('task')}' checkpoint, not a prior's.")
    parts = build_prior_parts(run, saved=saved["extra"])
    load_checkpoint(path, task=run.recipe.task, modules={"network": parts.network}, restore_rng=False, payload=saved)
    parts.network.eval()
    return parts
