"""Where a volume lies: the affine the tokenizer's modes record beside its token grid and reconstruction."""

from __future__ import annotations

import numpy as np
import torch


def volume_affine(image: torch.Tensor, index: int) -> np.ndarray:
    """The affine of item `index` of a (batched) MetaTensor; identity when the image carries none."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = affine[index] if affine.dim() == 3 else affine
    return affine.detach().cpu().numpy().astype(np.float64)
