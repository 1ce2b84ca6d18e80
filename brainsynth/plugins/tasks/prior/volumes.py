"""Writing volumes and their previews: NIfTI (atomically) and PNG mid-slices on the three axes."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.files import write_bytes_atomic, write_nifti_atomic


def mid_slices(volume: torch.Tensor | np.ndarray) -> np.ndarray:
    """[C, X, Y, Z] (or [X, Y, Z]) -> one [H, W] image of the three central slices side by side, in [0, 1]."""
    v = volume.detach().float().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume, np.float32)
    v = v[0] if v.ndim == 4 else v
    # Each slice is shown with the superior/anterior direction up (RAS voxel axes assumed).
    slices = [np.rot90(v[v.shape[0] // 2]), np.rot90(v[:, v.shape[1] // 2]), np.rot90(v[:, :, v.shape[2] // 2])]
    height = max(s.shape[0] for s in slices)
    padded = [np.pad(s, ((0, height - s.shape[0]), (0, 0))) for s in slices]
    return np.clip(np.concatenate(padded, axis=1), 0, 1)


def write_nifti(path: Path, volume: torch.Tensor | np.ndarray, affine: np.ndarray) -> None:
    """Write [C, *spatial] (C = 1 is squeezed) or [*spatial] as float32, via a temporary file."""
    array = volume.detach().float().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 4:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    write_nifti_atomic(path, nib.Nifti1Image(array.astype(np.float32), np.asarray(affine, dtype=np.float64)))


PREVIEW_HEIGHT = 192
"""Small images are enlarged (nearest neighbour, by a whole factor) to at least this height."""


def write_png(path: Path, image: np.ndarray) -> None:
    """A [H, W] image in [0, 1] as an 8-bit grey PNG, via a temporary file; coarse images enlarged."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import image as mpimg

    factor = max(1, -(-PREVIEW_HEIGHT // max(image.shape[0], 1)))
    image = np.kron(image, np.ones((factor, factor), dtype=image.dtype)) if factor > 1 else image
    buffer = io.BytesIO()
    mpimg.imsave(buffer, np.clip(image, 0, 1), cmap="gray", vmin=0.0, vmax=1.0, format="png")
    write_bytes_atomic(path, buffer.getvalue())
