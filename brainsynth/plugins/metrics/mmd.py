"""Maximum mean discrepancy between generated and real brains (a set metric).

Features: the voxel intensities of each volume (min-max scaled to [0, 1]) average-pooled by
`pool` per axis, which keeps the brain's shape and contrast and drops the voxel noise; no
network is involved, so the number never depends on weights a user may not have.
Kernel: Gaussian, ``k(x, y) = exp(-|x - y|^2 / (2 s^2))``, with the bandwidth ``s`` the median
distance between real brains (the median heuristic; fixed by the reference set, so sample sets
scored against the same references are comparable).
Estimate: the biased (V-statistic) MMD^2, ``mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)``: the
squared distance between the two kernel mean embeddings. It is 0 for identical sets and never
negative. (The original used a linear kernel on MedicalNet features, i.e. only a difference of
feature means; a Gaussian kernel also sees differences in spread.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainsynth.core.errors import DataError
from brainsynth.library.volume_sets import SetMetricResult, VolumeSet


def pooled_features(volumes: torch.Tensor, pool: int) -> torch.Tensor:
    """``[N, F]`` features: each ``[1, *spatial]`` volume average-pooled by `pool`, flattened."""
    volumes = volumes.float()
    if pool > 1:
        volumes = F.avg_pool3d(volumes, kernel_size=pool, stride=pool, ceil_mode=True)
    return volumes.flatten(1).double()


def median_bandwidth(features: torch.Tensor) -> float:
    """The median distance between distinct rows (1.0 when they are all equal or too few)."""
    distances = torch.cdist(features, features)
    upper = distances[torch.triu_indices(len(features), len(features), offset=1).unbind()]
    median = float(upper.median()) if upper.numel() else 0.0
    return median if median > 0 else 1.0


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Biased MMD^2 of feature rows `x` and `y` under a Gaussian kernel of `bandwidth`."""
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_xx = torch.exp(-gamma * torch.cdist(x, x).pow(2)).mean()
    k_yy = torch.exp(-gamma * torch.cdist(y, y).pow(2)).mean()
    k_xy = torch.exp(-gamma * torch.cdist(x, y).pow(2)).mean()
    return max(0.0, float(k_xx + k_yy - 2.0 * k_xy))


class MaximumMeanDiscrepancy:
    """Set metric: MMD^2 (Gaussian kernel, median bandwidth) between samples and real brains on pooled voxels.

    Args:
        pool: average-pooling factor per axis before the kernel (4: 3 mm voxels -> 12 mm).
    """

    name = "mmd"
    higher_is_better = False

    def __init__(self, pool: int = 4) -> None:
        if pool < 1:
            raise DataError(f"mmd: pool must be at least 1, got {pool}.")
        self.pool = pool

    def __call__(self, samples: VolumeSet, references: VolumeSet | None) -> SetMetricResult:
        if references is None:
            raise DataError("mmd compares samples with real brains; give a reference set.")
        if samples.spatial_shape != references.spatial_shape:
            raise DataError(
                f"mmd: samples have shape {samples.spatial_shape} but real brains {references.spatial_shape}; "
                "compare them on one grid."
            )
        x = pooled_features(samples.volumes, self.pool)
        y = pooled_features(references.volumes, self.pool)
        bandwidth = median_bandwidth(y)
        note = f"Gaussian-kernel MMD^2 on voxels pooled {self.pool}x (bandwidth {bandwidth:.3g}, median real-real distance)"
        return SetMetricResult({"mmd": gaussian_mmd2(x, y, bandwidth)}, notes={"mmd": note})
