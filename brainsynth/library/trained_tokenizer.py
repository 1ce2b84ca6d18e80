"""A trained tokenizer, loaded from its run directory: what a prior tokenizes with and decodes through.

`TrainedTokenizer` is the frozen network a prior's modes read through; `LoadedTokenizer` is the
same network as a notebook object (``brainsynth.load``). Both tasks use them, so they live here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint
from brainsynth.core.errors import DataError, RecipeError, RunError
from brainsynth.core.recipe import Recipe, recipe_from_text
from brainsynth.core.registry import Registry


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


def _as_batch(volume: Any, spatial_dims: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """A volume (a file, a nibabel image, an array or a tensor: ``[*grid]``, ``[C, *grid]``, or a
    batch ``[B, C, *grid]``) as ``[B, C, *grid]``, and whether it was one volume."""
    if isinstance(volume, (str, os.PathLike)):
        volume = nib.load(os.fspath(volume))
    if isinstance(volume, nib.Nifti1Image):
        volume = np.asarray(volume.dataobj, dtype=np.float32)
    tensor = torch.as_tensor(volume).float()
    single = tensor.ndim <= spatial_dims + 1
    while tensor.ndim < spatial_dims + 2:
        tensor = tensor[None]
    return tensor.to(device), single


class LoadedTokenizer:
    """A trained tokenizer: ``encode(volume) -> token grid``, ``decode(tokens) -> nibabel image``."""

    def __init__(self, trained: TrainedTokenizer, registry: Registry, device: torch.device) -> None:
        self.trained = trained
        self.registry = registry
        self.device = device

    @property
    def network(self) -> torch.nn.Module:
        return self.trained.network

    @property
    def spatial_dims(self) -> int:
        return len(self.trained.spatial_shape) if self.trained.spatial_shape else 3

    @property
    def affine(self) -> np.ndarray:
        affine = self.trained.affine
        return np.asarray(affine if affine is not None else np.eye(4), dtype=np.float64)

    def dataset(self, split: str = "val"):
        """The tokenizer's own data, preprocessed as in training (items ``{"image", "subject", ...}``)."""
        return self.registry.build("dataset", self.trained.recipe["data"]).split(split, train=False)

    def _check_space(self, batch: torch.Tensor) -> None:
        shape = self.trained.spatial_shape
        if shape is not None and tuple(batch.shape[2:]) != tuple(shape):
            raise DataError(
                f"this tokenizer works on {'x'.join(map(str, shape))} volumes (its training space), got "
                f"{'x'.join(map(str, batch.shape[2:]))}; take volumes from tokenizer.dataset(split) or preprocess alike."
            )

    @torch.inference_mode()
    def encode(self, volume: Any) -> torch.Tensor:
        """Token grid(s) ``[*grid]`` (or ``[B, *grid]`` for a batch) of a volume in the tokenizer's space."""
        batch, single = _as_batch(volume, self.spatial_dims, self.device)
        self._check_space(batch)
        tokens = self.network.encode_tokens(batch)
        return tokens[0] if single else tokens

    @torch.inference_mode()
    def reconstruct(self, volume: Any) -> nib.Nifti1Image:
        """The volume through the tokenizer (encode, then decode)."""
        return self.decode(self.encode(volume))

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor | np.ndarray) -> nib.Nifti1Image | list[nib.Nifti1Image]:
        """A token grid ``[*grid]`` -> a NIfTI image; a batch ``[B, *grid]`` -> a list of them."""
        grid = torch.as_tensor(tokens).long().to(self.device)
        single = grid.ndim == self.spatial_dims
        volumes = self.network.decode_tokens(grid[None] if single else grid).float().cpu().numpy()
        images = [nib.Nifti1Image(v[0] if v.shape[0] == 1 else np.moveaxis(v, 0, -1), self.affine) for v in volumes]
        return images[0] if single else images


def load_trained_tokenizer(directory: Path, recipe: Recipe, registry: Registry, checkpoint: str, device: torch.device) -> LoadedTokenizer:
    """The tokenizer of run `directory` as a `LoadedTokenizer` (its checkpoint read once)."""
    return LoadedTokenizer(load_tokenizer(directory, checkpoint, registry, device), registry, device)
