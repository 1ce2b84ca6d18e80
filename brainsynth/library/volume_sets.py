"""Sets of volumes and the contract of set-level metrics (a sample set against a reference set).

Per-volume metrics (``ms_ssim``, ``mae``, ...) compare a reconstruction with its own target. A
*set* metric has no pairs: it compares the distribution of generated brains with real ones, or
generated brains with the values they were conditioned on. It is registered as kind
``set_metric`` (a per-volume one as ``metric``), says with ``higher_is_better`` which way is better
(``None`` where a value of 1 is best), and is called as::

    result = metric(samples, references)      # two VolumeSet -> SetMetricResult

``result.values`` holds named numbers (a metric may give several, e.g. ``fid`` or
``fid_random_features``); ``result.rows`` holds per-volume values, one dict per volume with its
``set`` (the `VolumeSet.label`) and ``name``; ``result.notes`` says how a number was obtained
(e.g. which feature network).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import nibabel as nib
import numpy as np
import torch

from brainsynth.core.errors import DataError


@dataclasses.dataclass
class VolumeSet:
    """Volumes of one set on one grid, with what is known about each.

    Attributes:
        volumes: ``[N, 1, X, Y, Z]`` float32, each volume min-max scaled to [0, 1] (unless built
            with ``normalize=False``).
        affine: voxel -> world (MNI mm) matrix shared by the set; the morphology needs it.
        names: one name per volume (file stem or ``<label>_<index>``).
        conditioning: per volume, the values it was sampled with (``ventricular_volume``,
            ``brain_volume``, ``age``, ...) or, for real brains, their recorded values; or None.
            Only numeric values are kept.
        label: what the set is (``sample`` or ``real``); used in error messages and tables.
    """

    volumes: torch.Tensor
    affine: np.ndarray | None
    names: list[str]
    conditioning: list[dict[str, float]] | None = None
    label: str = "sample"

    def __len__(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.volumes.shape[2:])


@dataclasses.dataclass
class SetMetricResult:
    """What a set metric returns: named values, per-volume rows (with ``set`` and ``name``) and notes."""

    values: dict[str, float]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


@runtime_checkable
class SetMetric(Protocol):
    """The set-metric contract (see the module docstring)."""

    name: str
    higher_is_better: bool | None

    def __call__(self, samples: VolumeSet, references: VolumeSet | None) -> SetMetricResult: ...


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read(item: Any, label: str, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise DataError(f"{label} volume {index}: {path} does not exist. Check the path (or the folder it lists).")
        try:
            image = nib.load(str(path))
            array = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as exc:
            raise DataError(f"{path}: cannot read this {label} volume as NIfTI ({exc}).") from None
        return array, np.asarray(image.affine, dtype=np.float64), _stem(path)
    affine = getattr(item, "affine", None)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().float().numpy()
    array = np.asarray(item, dtype=np.float32)
    if affine is not None:
        affine = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu(), dtype=np.float64)
    return array, affine, f"{label}_{index:05d}"


def load_volume_set(
    items: Sequence[Any],
    *,
    label: str = "sample",
    affine: np.ndarray | torch.Tensor | None = None,
    conditioning: Sequence[Mapping[str, Any]] | None = None,
    names: Sequence[str] | None = None,
    normalize: bool = True,
) -> VolumeSet:
    """A `VolumeSet` from NIfTI paths, 3D arrays/tensors ([X, Y, Z] or [1, X, Y, Z]), or a mix.

    The affine is `affine` if given, else the first file's (or MetaTensor's). Every volume must
    have the same shape. With `normalize`, each volume is min-max scaled to [0, 1] on its own
    (the ``minmax`` data normalisation), so raw real volumes and decoded samples share one scale.
    """
    if len(items) == 0:
        raise DataError(f"the {label} set is empty; evaluation needs at least one {label} volume.")
    if conditioning is not None and len(conditioning) != len(items):
        raise DataError(
            f"{len(items)} {label} volumes but {len(conditioning)} conditioning rows; give one row per volume."
        )
    if names is not None and len(names) != len(items):
        raise DataError(f"{len(items)} {label} volumes but {len(names)} names; give one name per volume.")
    from monai.transforms import ScaleIntensity  # imported when volumes are read, not when a recipe is checked

    scale = ScaleIntensity(minv=0.0, maxv=1.0)
    arrays, found_names, found_affine, shape = [], [], None, None
    for index, item in enumerate(items):
        array, item_affine, name = _read(item, label, index)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise DataError(f"{label} volume {index} ({name}): expected one 3D volume, got shape {array.shape}.")
        if not np.isfinite(array).all():
            raise DataError(f"{label} volume {index} ({name}) holds NaN or infinite values; it cannot be evaluated.")
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise DataError(
                f"{label} volume {index} ({name}) has shape {array.shape} but the first has {shape}; every "
                "volume of an evaluation must be on one grid (the space the tokenizer was trained in)."
            )
        if found_affine is None and item_affine is not None:
            found_affine = item_affine
        tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
        arrays.append(torch.as_tensor(scale(tensor)).float() if normalize else tensor)
        found_names.append(name)
    if affine is not None:
        found_affine = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu(), dtype=np.float64)
    rows = None
    if conditioning is not None:
        rows = [{str(k): _number(v) for k, v in row.items() if _number(v) is not None} for row in conditioning]
    return VolumeSet(
        volumes=torch.stack(arrays),
        affine=found_affine,
        names=list(names) if names is not None else found_names,
        conditioning=rows,
        label=label,
    )


def _number(value: Any) -> float | None:
    """Numeric conditioning values; categories given as text (e.g. ``sex: F``) are not compared."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
