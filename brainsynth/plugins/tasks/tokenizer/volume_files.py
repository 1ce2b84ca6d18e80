"""The volumes the tokenizer's modes write, in the space of the image they came from."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.files import write_nifti_atomic


def volume_affine(image: torch.Tensor, index: int) -> np.ndarray:
    """The affine of item `index` of a (batched) MetaTensor; identity when the image carries none."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = affine[index] if affine.dim() == 3 else affine
    return affine.detach().cpu().numpy().astype(np.float64)


def write_volume(path: Path, volume: torch.Tensor, affine: np.ndarray) -> None:
    """Write [C, *spatial] (C = 1 is squeezed) as float32 NIfTI, via a temporary file."""
    array = volume.detach().float().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    write_nifti_atomic(path, nib.Nifti1Image(array.astype(np.float32), affine))
