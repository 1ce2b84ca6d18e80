"""The first transform of every volume chain: read a NIfTI file through nibabel and check it.

In a module of its own because it subclasses a MONAI transform (MONAI's caching datasets cache up
to the first transform that is not one): `volume_transforms` imports it when a chain is built, so that
validating a recipe costs no MONAI import.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import NibabelReader
from monai.transforms import LoadImage, MapTransform

from .volume_transforms import IMAGE_KEY, ConstantVolumeError, VolumeError


class LoadVolumed(MapTransform):
    """Load `keys` through nibabel as float32 MetaTensors and check each is one finite 3D volume.

    Any failure is a `VolumeError` naming the file. A 4D file whose fourth axis has length 1 is
    taken as 3D (many tools write them); anything else that is not 3D is refused.
    """

    def __init__(self, keys: Sequence[Hashable] = (IMAGE_KEY,), canonical: bool = False) -> None:
        super().__init__(keys)
        self.canonical = canonical
        self._reader = NibabelReader(as_closest_canonical=canonical)
        self._load = LoadImage(reader=self._reader, image_only=True, dtype=np.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            path = str(out[key])
            try:
                image = self._load(path, reader=self._reader)  # nibabel only: no fall-back readers
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [""])[0][:200]
                raise VolumeError(
                    f"{path}: cannot read this image ({type(exc).__name__}: {reason}). The file is "
                    "missing, truncated or not a NIfTI volume; re-export or remove it."
                ) from exc
            if image.ndim == 4 and image.shape[-1] == 1:
                image = image[..., 0]
            if image.ndim != 3:
                raise VolumeError(
                    f"{path}: expected one 3D volume, got an image of shape {tuple(image.shape)} "
                    f"({image.ndim}D). Give single 3D volumes (split 4D series, skip 2D slices)."
                )
            bad = int((~torch.isfinite(image.as_tensor())).sum())
            if bad:
                raise VolumeError(
                    f"{path}: {bad} voxel(s) are NaN or infinite. Fix the file (e.g. replace NaN by 0) "
                    "or remove it from the subject list."
                )
            values = image.as_tensor()
            if values.numel() and bool(values.min() == values.max()):
                raise ConstantVolumeError(
                    f"{path}: every voxel is {float(values.reshape(-1)[0]):g}, an empty (constant) volume that "
                    "would train on nothing. Remove it from the subject list, or set data.skip_constant: true "
                    "to leave such volumes out with a warning."
                )
            out[key] = image
        return out
