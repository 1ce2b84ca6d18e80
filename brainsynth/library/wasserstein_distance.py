"""Wasserstein distances between the real and the generated distributions of measured volumes.

Univariate: ``scipy.stats.wasserstein_distance`` (the 1-Wasserstein, or earth mover's,
distance between the two empirical distributions, in ml): how far, on average, the sampled
volumes have to move to become the real ones. 0 for equal distributions; lower is better.

Joint (several volumes at once): the exact 1-Wasserstein distance between the two empirical
distributions, each axis divided by the real brains' standard deviation on it so that ml of
brain and ml of ventricles weigh alike (unit: real SDs). Between two uniform distributions on n
points each, optimal transport is an assignment (Birkhoff-von Neumann), solved exactly by
``scipy.optimize.linear_sum_assignment``. With n real and m sampled points, each real point is
repeated lcm(n, m) / n times and each sample lcm(n, m) / m times, which is the same
distribution, so the assignment gives the exact distance as long as lcm(n, m) stays at most
`EXACT_POINTS`; above that, the mean over `SUBSAMPLE_REPEATS` seeded equal-size subsamples of
min(n, m, `EXACT_POINTS`) points each is reported instead (an estimate, said so in the note).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EXACT_POINTS = 1024
SUBSAMPLE_REPEATS = 8


def wasserstein_1d(real: Sequence[float], sampled: Sequence[float]) -> float | None:
    """1-Wasserstein distance between two samples of one variable (finite values only); None if one is empty."""
    a = np.asarray(real, dtype=np.float64)
    b = np.asarray(sampled, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return None
    from scipy import stats  # scipy: imported when scored, not when plugins load

    return float(stats.wasserstein_distance(a, b))


def _assignment_cost(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment  # scipy: imported when scored, not when plugins load
    from scipy.spatial.distance import cdist

    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def wasserstein_joint(real: np.ndarray, sampled: np.ndarray, seed: int = 0) -> tuple[float, bool] | None:
    """Exact (or subsampled) 1-Wasserstein distance between [n, d] and [m, d] point sets, in real SDs per axis.

    Returns (distance, exact); None when a set has no finite row. Rows with a NaN are left out.
    """
    a = np.asarray(real, dtype=np.float64)
    b = np.asarray(sampled, dtype=np.float64)
    a, b = a[np.isfinite(a).all(axis=1)], b[np.isfinite(b).all(axis=1)]
    if len(a) == 0 or len(b) == 0:
        return None
    scale = a.std(axis=0, ddof=1) if len(a) > 1 else np.ones(a.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    a, b = a / scale, b / scale
    common = math.lcm(len(a), len(b))
    if common <= EXACT_POINTS:
        return _assignment_cost(np.repeat(a, common // len(a), axis=0), np.repeat(b, common // len(b), axis=0)), True
    size = min(len(a), len(b), EXACT_POINTS)
    rng = np.random.default_rng(seed)
    costs = [
        _assignment_cost(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(SUBSAMPLE_REPEATS)
    ]
    return float(np.mean(costs)), False
