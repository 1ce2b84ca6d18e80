"""Measured morphology of a set of volumes, and how it agrees with what the volumes were conditioned on.

One row per volume (``measured_<variable>``, ``conditioned_<variable>``), calibration summaries
(`morphology_calibration`), distribution distances (`wasserstein_distance`) and the real brains'
instrument line. Shared by the ``morphology_preservation`` set metric, the reconstruction
evaluation and the report; see the metric (`brainsynth.plugins.metrics.morphology_preservation`)
for what each number means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainsynth.core.errors import DataError

from .morphology_calibration import Instrument, calibrate, coverage, fit_instrument, real_band
from .morphology_measurement import TissueContrast, measure_morphology, reference_contrast, tissue_contrast
from .volume_sets import VolumeSet
from .wasserstein_distance import wasserstein_1d, wasserstein_joint

MORPHOLOGY_VARIABLES = ("ventricular_volume", "brain_volume", "medial_temporal_volume")

JOINT_VARIABLES = ("ventricular_volume", "brain_volume")
"""The volumes of ``volume_wasserstein_joint``: the two global ones (a regional volume has its own distance)."""


def agreement(conditioned: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Spearman rho, least-squares slope and count of the finite (conditioned, measured) pairs.

    Fewer than 3 pairs, or a constant side, give NaN rho and slope: no number means anything then.
    """
    c = np.asarray(conditioned, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(m)
    c, m = c[keep], m[keep]
    result = {"spearman": float("nan"), "slope": float("nan"), "count": float(c.size)}
    if c.size < 3 or np.ptp(c) == 0 or np.ptp(m) == 0:
        return result
    from scipy import stats  # scipy: imported when scored, not when plugins load

    result["spearman"] = float(stats.spearmanr(c, m).statistic)
    result["slope"] = float(stats.linregress(c, m).slope)
    return result


def set_contrast(volumes: VolumeSet) -> TissueContrast | None:
    """The median tissue contrast of a set of (sharp, real) brains."""
    if volumes.affine is None:
        return None
    return reference_contrast([tissue_contrast(volumes.volumes[i, 0].numpy(), volumes.affine) for i in range(len(volumes))])


def measure_set(volumes: VolumeSet, variables: Sequence[str], contrast: TissueContrast | None = None) -> list[dict]:
    """One row per volume: ``set``, ``name``, ``conditioned_<variable>`` (when known) and ``measured_<variable>``."""
    if volumes.affine is None:
        raise DataError(
            f"morphology_preservation: the {volumes.label} volumes have no affine; give NIfTI files or the affine "
            "of the space they were decoded in (volumes are measured in MNI millimetres)."
        )
    rows = []
    for index, name in enumerate(volumes.names):
        measured = measure_morphology(volumes.volumes[index, 0].numpy(), volumes.affine, contrast).as_dict()
        row = {"set": volumes.label, "name": name}
        for variable in variables:
            if volumes.conditioning is not None and variable in volumes.conditioning[index]:
                row[f"conditioned_{variable}"] = volumes.conditioning[index][variable]
            row[f"measured_{variable}"] = measured[variable]
        rows.append(row)
    return rows


def _pairs(rows: list[dict], variable: str) -> tuple[list[float], list[float]]:
    pairs = [(r[f"conditioned_{variable}"], r[f"measured_{variable}"]) for r in rows if f"conditioned_{variable}" in r]
    return [c for c, _ in pairs], [m for _, m in pairs]


def summarise_calibration(rows: list[dict], variables: Sequence[str], prefix: str) -> dict[str, float]:
    """``<variable><prefix>_<spearman|slope|intercept|mae>``, or for a fixed variable ``_fixed_at``, ``_measured_mean|sd``, ``_mae``."""
    values = {}
    for variable in variables:
        fit = calibrate(*_pairs(rows, variable))
        if fit is None:
            continue
        key = f"{variable}{prefix}"
        if fit.fixed is not None:
            values.update({f"{key}_fixed_at": fit.fixed, f"{key}_measured_mean": fit.measured_mean,
                           f"{key}_measured_sd": fit.measured_sd})
        else:
            values.update({f"{key}_{name}": getattr(fit, name) for name in ("spearman", "slope", "intercept")})
        values[f"{key}_mae"] = fit.mae
    return values


def distribution_values(sample_rows: list[dict], real_rows: list[dict], variables: Sequence[str]) -> dict[str, float]:
    """Wasserstein distances (per variable in ml, joint in real SDs) and coverage of the real band."""
    values = {}
    for variable in variables:
        real = [r[f"measured_{variable}"] for r in real_rows]
        distance = wasserstein_1d(real, [r[f"measured_{variable}"] for r in sample_rows])
        if distance is not None:
            values[f"{variable}_wasserstein"] = distance
        band = real_band(*_pairs(real_rows, variable))
        covered = coverage(band, *_pairs(sample_rows, variable)) if band is not None else None
        if covered is not None:
            values[f"{variable}_coverage"] = covered
    joint = [v for v in JOINT_VARIABLES if v in variables]
    if len(joint) > 1:
        points = [[[r[f"measured_{v}"] for v in joint] for r in rows] for rows in (real_rows, sample_rows)]
        joint = wasserstein_joint(np.array(points[0]), np.array(points[1]))
        if joint is not None:
            values["volume_wasserstein_joint"] = joint[0]
    return values


def read_through_instrument(real_rows: list[dict], row_sets: Sequence[list[dict]], variables: Sequence[str]) -> dict[str, Instrument]:
    """Fit each variable's instrument line on `real_rows` and correct every row of `row_sets` through it.

    A corrected row keeps its reading as ``raw_measured_<variable>``; variables without a usable
    line (too few real brains with recorded values) are left as read. Returns the lines used.
    """
    used = {}
    for variable in variables:
        line = fit_instrument(*_pairs(real_rows, variable))
        if line is None:
            continue
        used[variable] = line
        for rows in row_sets:
            for row in rows:
                row[f"raw_measured_{variable}"] = row[f"measured_{variable}"]
                row[f"measured_{variable}"] = line.correct(row[f"measured_{variable}"])
    return used


def describe_instrument(lines: dict[str, Instrument]) -> str:
    """One line for the notes: which lines were used."""
    return "; ".join(
        f"{variable}: measured = {line.intercept:.3g} + {line.slope:.3g} x recorded ({line.count} real brains)"
        for variable, line in lines.items()
    )
