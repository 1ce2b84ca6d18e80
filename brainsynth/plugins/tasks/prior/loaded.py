"""A trained prior as a Python object (what `brainsynth.load` returns for a prior run): it samples
and scores in a notebook, with no run directory of its own.

It is built from the run's recorded recipe and checkpoint exactly as the CLI's modes build it
(`trained_prior`), and it writes nothing. Volumes go in and come out in the tokenizer's space
(see `brainsynth.library.trained_tokenizer.LoadedTokenizer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.errors import DataError
from brainsynth.core.sampling import check_guidance, sample
from brainsynth.library.prior_assembly import PriorParts
from brainsynth.library.trained_tokenizer import LoadedTokenizer

from .likelihood import token_log_likelihood


def _is_token_grid(value: Any) -> bool:
    return (torch.is_tensor(value) or isinstance(value, np.ndarray)) and not torch.as_tensor(value).is_floating_point()


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
        top_p: float | None = None, seed: int = 0, guided_variables: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """``[n, *grid]`` token grids. `conditions`: one mapping for all, or one per sample; variables
        left out take their null vectors (a prior trained with conditioning dropout); `guided_variables`
        narrows guidance to those variables."""
        rows = [dict(conditions or {})] * n if conditions is None or isinstance(conditions, Mapping) else [dict(c) for c in conditions]
        if len(rows) != n:
            raise DataError(f"{len(rows)} conditions for {n} samples; give one mapping, or one per sample.")
        check_guidance(self.network, float(guidance_scale))
        generator = torch.Generator(device=self.device).manual_seed(seed)
        sequences = sample(self.network, n, self._values(rows), temperature=temperature, top_k=top_k, top_p=top_p,
                           generator=generator, guidance_scale=guidance_scale, guided_variables=guided_variables)
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


__all__ = ["LoadedPrior"]
