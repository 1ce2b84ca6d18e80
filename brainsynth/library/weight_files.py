"""Local weight files of pretrained networks: read with ``torch.load(weights_only=True)``, never downloaded.

Shared by the LPIPS networks and perceptual backbones (losses) and the FID feature networks (metrics).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in the local file `path` (`what` names it in errors); ``module.`` prefixes dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the {what} must hold a state dict, found {type(state).__name__}.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load `state` into `module` strictly; a mismatch is a `CheckpointError` naming the file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise CheckpointError(f"{path}: this file does not fit the {what}: {' '.join(first)}") from None
