"""A trained tokenizer, loaded from its run directory: what a prior tokenizes with and decodes through."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch

from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint
from brainsynth.core.errors import RecipeError, RunError
from brainsynth.core.recipe import Recipe, recipe_from_text
from brainsynth.core.registry import Registry


@dataclasses.dataclass
class TokenizerSource:
    """The ``tokenizer`` section of a prior's recipe: which trained tokenizer to use."""

    run: str | None = None
    """A tokenizer run directory. Default: the run that extracted the token grids (tokens.json)."""
    checkpoint: Literal["best", "last"] = "best"
    recipe: str | None = None
    """The tokenizer's recipe file. Only ``run --dry-run`` reads it: it sizes the prior (token grid,
    vocabulary) before the tokenizer run exists. A relative path starts at the working directory."""


@dataclasses.dataclass
class TrainedTokenizer:
    """A frozen tokenizer in eval mode and the space it was trained in."""

    network: torch.nn.Module
    directory: Path
    affine: list[list[float]] | None
    spatial_shape: list[int] | None
    recipe: Recipe | None = None
    """The recipe the tokenizer was trained with (its data block gives real brains in its space)."""

    @property
    def num_embeddings(self) -> int:
        return self.network.num_embeddings

    def grid(self) -> tuple[int, ...]:
        if self.spatial_shape is None:
            raise RunError(f"{self.directory}: the tokenizer checkpoint does not record its training volume shape.")
        return tuple(self.network.token_grid(self.spatial_shape))


def load_tokenizer(directory: str | Path, checkpoint: str, registry: Registry, device: torch.device) -> TrainedTokenizer:
    """Build the tokenizer a run directory was trained with and load its weights (frozen, eval mode)."""
    directory = Path(directory)
    path = directory / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise RunError(
            f"{path}: no '{checkpoint}' tokenizer checkpoint. Set tokenizer.run to a trained tokenizer run "
            "directory (and tokenizer.checkpoint to best or last)."
        )
    state = read_checkpoint(path)
    if state.get("task") != "tokenizer":
        raise RunError(f"{path}: this is a '{state.get('task')}' checkpoint, not a tokenizer's; check tokenizer.run.")
    try:
        recipe = recipe_from_text(state["recipe"], registry, f"{path} (its recipe)")
    except RecipeError as exc:
        raise RunError(f"{path}: the tokenizer's saved recipe no longer validates: {exc}") from None
    network = registry.build("tokenizer", recipe["network"]).to(device)
    loaded = load_checkpoint(path, task="tokenizer", modules={"network": network}, restore_rng=False, payload=state)
    network.eval().requires_grad_(False)
    space: dict[str, Any] = loaded["extra"].get("space") or {}
    return TrainedTokenizer(network, directory, space.get("affine"), space.get("spatial_shape"), recipe)
