"""The ``nifti`` dataset: NIfTI volumes from folders or csv/tsv subject lists."""

from __future__ import annotations

from typing import Literal

from brainsynth.core.data import Subject
from brainsynth.library.subjects import list_subjects
from brainsynth.library.volume_data import VolumeSource
from brainsynth.library.volume_transforms import transform_settings


class NiftiSource(VolumeSource):
    """NIfTI volumes from a folder or a csv/tsv with a 'path' column, one source per split.

    Parameters (recipe keys):
        train: folder of ``.nii``/``.nii.gz`` files, or a csv/tsv with a ``path`` column.
        val: the same for the validation split (optional).
        test: the same for a test split (optional).
        roi: three sizes (centre crop) or three end-exclusive ``[start, end)`` pairs; the
            image is then zero padded to the ROI size. None keeps each image's own size.
        canonical: reorient to the closest canonical (RAS) orientation when loading.
        normalize: ``minmax`` (each volume to [0, 1], clamped there) or ``zscore`` (clamped
            to [-1, 1]).
        augment: augment training items (affine, contrast, intensity shift, noise).
        augmentation_probability: probability of each augmentation (the original's 0.2).
        augmentation_strength: the original's strength multiplier (0 = its base ranges).
        cache: ``none``, ``memory`` (MONAI CacheDataset) or ``disk`` (PersistentDataset).
        cache_dir: folder of the disk cache (default: under ``cache_root()/volumes``).
        conditioning_table: csv/tsv of the subjects' variables (age, sex, volumes...); it is
            recorded with extracted tokens, so a prior trained on them finds it.
        skip_constant: leave out, with a warning, volumes whose voxels all hold one value (each
            file is read once more to tell); by default such a volume is an error naming it.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        roi: list[int] | list[list[int]] | None = None,
        canonical: bool = False,
        normalize: Literal["minmax", "zscore"] = "minmax",
        augment: bool = False,
        augmentation_probability: float = 0.2,
        augmentation_strength: float = 0.0,
        cache: Literal["none", "memory", "disk"] = "none",
        cache_dir: str | None = None,
        conditioning_table: str | None = None,
        skip_constant: bool = False,
    ) -> None:
        splits: dict[str, list[Subject]] = {"train": list_subjects(train)}
        if val is not None:
            splits["val"] = list_subjects(val)
        if test is not None:
            splits["test"] = list_subjects(test)
        settings = transform_settings(
            roi=roi,
            canonical=canonical,
            normalize=normalize,
            augment=augment,
            augmentation_probability=augmentation_probability,
            augmentation_strength=augmentation_strength,
        )
        super().__init__(
            splits, settings, cache=cache, cache_dir=cache_dir, conditioning_table=conditioning_table,
            skip_constant=skip_constant,
        )
