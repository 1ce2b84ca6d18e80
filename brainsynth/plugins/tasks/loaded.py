"""Trained runs as Python objects (what `brainsynth.load` returns): a tokenizer that encodes and
decodes, a prior that samples and scores, in a notebook, with no run directory of their own.

They are built from the run's recorded recipe and checkpoint exactly as the CLI's modes build
them, and they write nothing. Volumes go in and come out in the tokenizer's space: the grid and
intensity range its training data was preprocessed to (``tokenizer.dataset(split)`` yields real
brains in that space; decoded volumes carry the affine the tokenizer recorded).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.errors import DataError
from brainsynth.core.recipe import Recipe
from brainsynth.core.registry import Registry
from brainsynth.core.sampling import check_guidance, sample

from .prior_likelihood import token_log_likelihood
from .prior_parts import PriorParts
from .tokenizer_run import TrainedTokenizer, load_tokenizer

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


def _is_token_grid(value: Any) -> bool:
    return (torch.is_tensor(value) or isinstance(value, np.ndarray)) and not torch.as_tensor(value).is_floating_point()


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


class LoadedPrior:
    """A trained prior: ``sample(n, conditions)`` -> brains, ``likelihood(volume)`` -> per-token log-probabilities."""

    def __init__(self, parts: PriorParts, tokenizer: LoadedTokenizer, device: torch.device) -> None:
        self.parts = parts
        self.tokenizer = tokenizer
        self.device = device

    @property
    def network(self) -> torch.nn.Module:
        return self.parts.network

    @property
    def variables(self) -> list[str]:
        """The conditioning variables, in the table's order (empty when unconditioned)."""
        return list(self.parts.conditioning.columns) if self.parts.conditioned else []

    def _values(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor] | None:
        if not self.parts.conditioned:
            if any(rows):
                raise DataError("this prior is not conditioned; sample it without conditions.")
            return None
        if not any(rows):
            return None  # sample() gives a prior with null vectors its unconditional branch
        codes = self.parts.table.encode_many(rows, partial=getattr(self.parts.conditioning, "has_nulls", False))
        return self.parts.values(codes, self.device)

    @torch.inference_mode()
    def sample_tokens(
        self, n: int, conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, *,
        guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, seed: int = 0,
    ) -> torch.Tensor:
        """``[n, *grid]`` token grids. `conditions`: one mapping for all, or one per sample; variables
        left out take their null vectors (a prior trained with conditioning dropout)."""
        rows = [dict(conditions or {})] * n if conditions is None or isinstance(conditions, Mapping) else [dict(c) for c in conditions]
        if len(rows) != n:
            raise DataError(f"{len(rows)} conditions for {n} samples; give one mapping, or one per sample.")
        check_guidance(self.network, float(guidance_scale))
        generator = torch.Generator(device=self.device).manual_seed(seed)
        sequences = sample(self.network, n, self._values(rows), temperature=temperature, top_k=top_k, top_p=top_p,
                           generator=generator, guidance_scale=guidance_scale)
        return self.parts.ordering.revert(sequences)

    def sample(self, n: int, conditions=None, **options: Any) -> list[nib.Nifti1Image]:
        """`n` brains as NIfTI images (see `sample_tokens` for the options)."""
        grids = self.sample_tokens(n, conditions, **options)
        return self.tokenizer.decode(grids)

    @torch.inference_mode()
    def likelihood(self, volume_or_tokens: Any, conditions: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Log-probability ``[*grid]`` of each token given those before it in the prior's order; give a
        volume in the tokenizer's space or its token grid (integer array)."""
        given = volume_or_tokens
        grid = torch.as_tensor(given).long().to(self.device) if _is_token_grid(given) else self.tokenizer.encode(given)
        codes = None
        if self.parts.conditioned:  # nothing given: NaN codes, the null vectors of a prior trained with dropout
            codes = self.parts.table.encode_many([dict(conditions or {})], partial=getattr(self.parts.conditioning, "has_nulls", False))
        return token_log_likelihood(self.parts, {"tokens": grid[None], "conditioning": codes}, self.device)[0]


def load_trained_tokenizer(directory: Path, recipe: Recipe, registry: Registry, checkpoint: str, device: torch.device) -> LoadedTokenizer:
    return LoadedTokenizer(load_tokenizer(directory, checkpoint, registry, device), registry, device)


__all__ = ["LoadedPrior", "LoadedTokenizer", "load_trained_tokenizer"]
