"""Sharpness of a brain volume: its mean gradient magnitude inside the brain, and the ratio of two sets'.

Shared by the ``sharpness`` set metric and the reconstruction evaluation; see the metric
(`brainsynth.plugins.metrics.sharpness`) for what the number means.
"""

from __future__ import annotations

import numpy as np

from .morphology_measurement import foreground_mask
from .volume_sets import VolumeSet


def mean_gradient(volume: np.ndarray, affine: np.ndarray | None) -> float:
    """Mean gradient magnitude (intensity per mm) of a 3D volume inside its foreground; NaN if it has none."""
    array = np.asarray(volume, dtype=np.float64)
    spacing = np.ones(3) if affine is None else np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    mask, spread = foreground_mask(array)
    if not spread or not mask.any():
        return float("nan")
    gradient = np.sqrt(sum(g**2 for g in np.gradient(array, *spacing)))
    return float(gradient[mask].mean())


def set_sharpness(volumes: VolumeSet) -> np.ndarray:
    """`mean_gradient` of each volume of a set."""
    return np.array([mean_gradient(volumes.volumes[i, 0].numpy(), volumes.affine) for i in range(len(volumes))])


def sharpness_ratio(made: np.ndarray, real: np.ndarray) -> float:
    """Mean sharpness of `made` over mean sharpness of `real` (finite values only); NaN if either is empty."""
    made, real = made[np.isfinite(made)], real[np.isfinite(real)]
    if made.size == 0 or real.size == 0 or real.mean() <= 0:
        return float("nan")
    return float(made.mean() / real.mean())

