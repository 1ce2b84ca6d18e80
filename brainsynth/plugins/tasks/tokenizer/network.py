"""The run's tokenizer network: new for ``train``, with its trained weights for the other modes."""

from __future__ import annotations

from typing import Any

from brainsynth.core.checkpoint import load_checkpoint
from brainsynth.core.errors import RunError
from brainsynth.core.runner import Run


def build_network(run: Run):
    """The recipe's VQ-VAE on the run's device."""
    return run.build("network").to(run.device)


def load_trained(run: Run, network) -> dict[str, Any]:
    """Load ``outputs.checkpoint`` into `network` (eval mode); returns the checkpoint (read once)."""
    name = run.recipe["outputs"]["checkpoint"]
    path = run.checkpoints / f"{name}.pt"
    if not path.is_file():
        raise RunError(f"{path}: no '{name}' checkpoint in this run; train it first (--mode train).")
    state = load_checkpoint(path, task=run.recipe.task, modules={"network": network}, restore_rng=False)
    network.eval()
    return state
