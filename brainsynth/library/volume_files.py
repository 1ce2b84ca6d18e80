"""Volumes, token grids and their previews on disk: one NIfTI writer, one preview orientation.

NIfTI and ``.npy`` files go through core's atomic writer (`brainsynth.core.files.write_bytes_atomic`),
so a reader never sees half a file and no listing takes a temporary for data. Every preview, the
PNG a task writes beside a sample, the image a run logs and the report's montages, shows a slice
the one way `mid_slice` gives it: neurological convention on RAS voxel axes (the subject's right
on the right, superior up, anterior up in axial slices).
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.errors import DataError
from brainsynth.core.files import write_bytes_atomic

VIEWS = {"sagittal": 0, "coronal": 1, "axial": 2}
"""View name -> RAS axis the slice is taken across."""


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """An array written to `path` as ``.npy`` through a temporary file (removed again if the write fails)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_bytes_atomic(path, buffer.getvalue())


def write_nifti_atomic(path: str | os.PathLike, image) -> Path:
    """A nibabel image written to `path` (``.nii`` or ``.nii.gz``) through a temporary file."""
    data = image.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return write_bytes_atomic(path, data)


def volume_affine(image: torch.Tensor, index: int = 0) -> np.ndarray:
    """The affine of item `index` of a (batched) MetaTensor, or of an unbatched one; identity when it carries none."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = affine[index] if affine.dim() == 3 else affine
    return affine.detach().cpu().numpy().astype(np.float64)


def write_nifti(path: Path, volume: torch.Tensor | np.ndarray, affine: np.ndarray) -> None:
    """Write [C, *spatial] (C = 1 is squeezed) or [*spatial] as float32, via a temporary file."""
    array = volume.detach().float().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 4:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    write_nifti_atomic(path, nib.Nifti1Image(array.astype(np.float32), np.asarray(affine, dtype=np.float64)))


def load_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The volume at `path` reoriented to RAS, and its voxel sizes (mm)."""
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        array = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"{path}: cannot read this volume for the report ({exc}).") from None
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: the report shows 3D volumes, this one has shape {array.shape}.")
    return array, np.asarray(image.header.get_zooms()[:3], dtype=np.float64)


def mid_slice(volume: np.ndarray, axis: int) -> np.ndarray:
    """The middle slice across `axis` of an [X, Y, Z] RAS volume as an image, row 0 on top: the
    later remaining axis (superior, or anterior in axial slices) up, the earlier one to the right."""
    return np.rot90(np.take(volume, volume.shape[axis] // 2, axis=axis))


def slice_aspect(zooms: np.ndarray, axis: int) -> float:
    """Height over width of one pixel of `mid_slice` (matplotlib's ``aspect``), from the voxel sizes."""
    rows, cols = [a for a in range(3) if a != axis][::-1]
    return float(zooms[rows] / zooms[cols])


def mid_slices(volume: torch.Tensor | np.ndarray) -> np.ndarray:
    """[C, X, Y, Z] (or [X, Y, Z]) -> one [H, W] image of the three central slices side by side, in [0, 1]."""
    v = volume.detach().float().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume, np.float32)
    v = v[0] if v.ndim == 4 else v
    slices = [mid_slice(v, axis) for axis in range(3)]
    height = max(s.shape[0] for s in slices)
    padded = [np.pad(s, ((0, height - s.shape[0]), (0, 0))) for s in slices]
    return np.clip(np.concatenate(padded, axis=1), 0, 1)


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
