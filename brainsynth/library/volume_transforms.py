"""MONAI dictionary transform chains for 3D volumes, as the original built them (reference §6).

A chain is two parts, so that caching keeps the expensive, deterministic one:

* preprocessing (`preprocessing_transforms`): load through nibabel (optionally closest-canonical
  RAS), check the volume is one finite, non-constant 3D image, channel first, min-max to [0, 1]
  or z-score of the whole volume (before cropping, as the original), ROI crop (centre size or end-exclusive
  ``[start, end)`` per axis, clipped to the image), then zero pad to the ROI size;
* finishing (`finishing_transforms`): the augmentations when training (affine, contrast,
  intensity shift, Gaussian noise, each with probability p and the original's strengths), then
  the clamp to [0, 1] (min-max) or [-1, 1] (z-score) and float32.

Crop and pad go through MONAI's MetaTensor, so the image's affine follows every voxel that is
cut or added: a decoded volume saved with it lands back in the space it was read from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from brainsynth.core.errors import BrainsynthError, DataError, RecipeError

IMAGE_KEY = "image"

Roi = Sequence[int] | Sequence[Sequence[int]]
"""Three ints (a centre crop of that size) or three ``[start, end)`` pairs (an explicit crop)."""


class VolumeError(DataError):
    """A volume cannot be used: unreadable, corrupt, not 3D, or with non-finite voxels.

    When raised inside a DataLoader worker, PyTorch re-creates the error in the main process
    from a message holding the worker's whole traceback; the constructor recovers the original
    one-line message so the user still sees one clear sentence.
    """

    def __init__(self, message: str) -> None:
        if message.startswith(f"Caught {type(self).__name__} "):
            marker = f"{type(self).__module__}.{type(self).__qualname__}: "
            lines = [line for line in message.splitlines() if line.startswith(marker)]
            if lines:
                message = lines[-1][len(marker) :]
        super().__init__(message)


def find_brainsynth_error(exc: BaseException) -> BrainsynthError | None:
    """The first `BrainsynthError` in `exc`'s ``raise ... from`` chain.

    MONAI wraps an exception raised inside a transform as ``RuntimeError(...) from exc``, once
    per level of Compose and Dataset; this finds the user's error underneath.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BrainsynthError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


@dataclasses.dataclass(frozen=True)
class ParsedRoi:
    """A validated ROI: the crop (centre size, or start and end-exclusive end) and its size."""

    size: tuple[int, int, int]
    start: tuple[int, int, int] | None = None
    end: tuple[int, int, int] | None = None

    @property
    def centred(self) -> bool:
        return self.start is None


def parse_roi(roi: Roi | None) -> ParsedRoi | None:
    """Check a recipe ROI; ``[[16,176],[16,240],[96,256]]`` keeps 16..175, 16..239, 96..255."""
    if roi is None:
        return None
    items = list(roi)
    if len(items) != 3:
        raise RecipeError(f"roi: expected 3 axes, got {len(items)} ({roi!r}). Give 3 sizes or 3 [start, end) pairs.")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        size = tuple(int(v) for v in items)
        if min(size) < 1:
            raise RecipeError(f"roi: sizes must be positive, got {roi!r}.")
        return ParsedRoi(size=size)  # type: ignore[arg-type]
    pairs = []
    for axis, pair in enumerate(items):
        is_pair = isinstance(pair, (list, tuple)) and len(pair) == 2
        if not is_pair or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
            raise RecipeError(
                f"roi: axis {axis} must be an int size or a [start, end) pair of ints, got {pair!r}."
            )
        start, end = int(pair[0]), int(pair[1])
        if start < 0 or end <= start:
            raise RecipeError(f"roi: axis {axis} needs 0 <= start < end (end exclusive), got [{start}, {end}].")
        pairs.append((start, end))
    return ParsedRoi(
        size=tuple(e - s for s, e in pairs),  # type: ignore[arg-type]
        start=tuple(s for s, _ in pairs),  # type: ignore[arg-type]
        end=tuple(e for _, e in pairs),  # type: ignore[arg-type]
    )


@dataclasses.dataclass(frozen=True)
class TransformSettings:
    """What a chain does. Defaults are the original's (p = 0.2, strength 0, min-max)."""

    roi: ParsedRoi | None = None
    canonical: bool = False
    normalize: Literal["minmax", "zscore"] = "minmax"
    augment: bool = False
    augmentation_probability: float = 0.2
    augmentation_strength: float = 0.0

    def __post_init__(self) -> None:
        if self.normalize not in ("minmax", "zscore"):
            raise RecipeError(f"normalize: expected 'minmax' or 'zscore', got {self.normalize!r}.")
        if not 0.0 <= self.augmentation_probability <= 1.0:
            raise RecipeError(
                f"augmentation_probability: expected a probability in [0, 1], got {self.augmentation_probability}."
            )
        if self.augmentation_strength < 0:
            raise RecipeError(f"augmentation_strength: expected >= 0, got {self.augmentation_strength}.")

    @property
    def clamp(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.normalize == "minmax" else (-1.0, 1.0)

    def preprocessing_key(self) -> dict[str, Any]:
        """What the cached (deterministic) part depends on; names a disk cache."""
        roi = None if self.roi is None else dataclasses.asdict(self.roi)
        return {"roi": roi, "canonical": self.canonical, "normalize": self.normalize}


def transform_settings(
    roi: Roi | None = None,
    canonical: bool = False,
    normalize: Literal["minmax", "zscore"] = "minmax",
    augment: bool = False,
    augmentation_probability: float = 0.2,
    augmentation_strength: float = 0.0,
) -> TransformSettings:
    """Settings from recipe values (the ROI as written in the recipe)."""
    return TransformSettings(
        roi=parse_roi(roi),
        canonical=canonical,
        normalize=normalize,
        augment=augment,
        augmentation_probability=float(augmentation_probability),
        augmentation_strength=float(augmentation_strength),
    )


class ConstantVolumeError(VolumeError):
    """A volume whose voxels all hold one value (an empty or failed export)."""


def is_constant_volume(path: str | Path) -> bool:
    """True when every voxel of the NIfTI file at `path` holds the same value (read through nibabel)."""
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    return data.size > 0 and bool(np.nanmin(data) == np.nanmax(data))


def preprocessing_transforms(settings: TransformSettings, keys: Sequence[str] = (IMAGE_KEY,)) -> list:
    """Deterministic part of the chain: load, check, channel first, normalise, crop, pad."""
    from monai.transforms import CenterSpatialCropd, EnsureChannelFirstd, NormalizeIntensityd, ScaleIntensityd, SpatialCropd, SpatialPadd

    from .volume_loader import LoadVolumed

    keys = list(keys)
    chain: list = [
        LoadVolumed(keys, canonical=settings.canonical),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
    ]
    if settings.normalize == "minmax":
        chain.append(ScaleIntensityd(keys, minv=0.0, maxv=1.0))
    else:
        chain.append(NormalizeIntensityd(keys))
    roi = settings.roi
    if roi is not None:
        if roi.centred:
            chain.append(CenterSpatialCropd(keys, roi_size=roi.size))
        else:
            chain.append(SpatialCropd(keys, roi_start=roi.start, roi_end=roi.end))
        chain.append(SpatialPadd(keys, spatial_size=roi.size, mode="constant", method="symmetric"))
    return chain


def augmentation_transforms(settings: TransformSettings, keys: Sequence[str] = (IMAGE_KEY,)) -> list:
    """The original's image-mode augmentations; each fires with probability p, strength s.

    rotation 0.04 + 0.2 s rad, translation 2 + round(s) voxels, scale 0.05 + 0.01 s (per axis,
    zero padding, output the ROI size); gamma in (0.99 - 0.01 s, 1.01 + 0.01 s); intensity shift
    in (0, 0.05 + 0.025 s); Gaussian noise with std 0.02 + 0.01 s.
    """
    from monai.transforms import RandAdjustContrastd, RandAffined, RandGaussianNoised, RandShiftIntensityd

    keys = list(keys)
    p, s = settings.augmentation_probability, settings.augmentation_strength
    spatial_size = settings.roi.size if settings.roi is not None else None
    return [
        RandAffined(
            keys,
            prob=p,
            rotate_range=[0.04 + 0.2 * s] * 3,
            translate_range=[2 + round(1 * s)] * 3,
            scale_range=[0.05 + 0.01 * s] * 3,
            padding_mode="zeros",
            spatial_size=spatial_size,
            cache_grid=spatial_size is not None,
        ),
        RandAdjustContrastd(keys, prob=p, gamma=(0.99 - 0.01 * s, 1.01 + 0.01 * s)),
        RandShiftIntensityd(keys, prob=p, offsets=(0.0, 0.05 + 0.025 * s)),
        RandGaussianNoised(keys, prob=p, mean=0.0, std=0.02 + 0.01 * s),
    ]


def finishing_transforms(settings: TransformSettings, train: bool, keys: Sequence[str] = (IMAGE_KEY,)) -> list:
    """Augment (training chains only, when asked), clamp, float32 MetaTensor."""
    from monai.transforms import EnsureTyped, ThresholdIntensityd

    keys = list(keys)
    chain: list = []
    if train and settings.augment and settings.augmentation_probability > 0:
        chain.extend(augmentation_transforms(settings, keys))
    low, high = settings.clamp
    chain.append(ThresholdIntensityd(keys, threshold=high, above=False, cval=high))
    chain.append(ThresholdIntensityd(keys, threshold=low, above=True, cval=low))
    chain.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=True))
    return chain


def build_transforms(settings: TransformSettings, train: bool, keys: Sequence[str] = (IMAGE_KEY,)) -> Compose:
    """The whole chain. Evaluation chains (``train=False``) never augment."""
    from monai.transforms import Compose

    return Compose(preprocessing_transforms(settings, keys) + finishing_transforms(settings, train, keys))


def __getattr__(name: str):
    if name == "LoadVolumed":  # in its own module, so that importing this one costs no MONAI import
        from .volume_loader import LoadVolumed

        return LoadVolumed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_KEY",
    "ConstantVolumeError",
    "LoadVolumed",
    "ParsedRoi",
    "Roi",
    "TransformSettings",
    "VolumeError",
    "augmentation_transforms",
    "build_transforms",
    "find_brainsynth_error",
    "is_constant_volume",
    "finishing_transforms",
    "parse_roi",
    "preprocessing_transforms",
    "transform_settings",
]
