"""Morphology preservation: do generated brains have the volumes they were conditioned on?

Each sample's ventricular and brain volume is measured with `measure_morphology` (the same
estimate the data side uses) and compared with the value it was sampled with (keys per
variable, e.g. ``ventricular_volume_<suffix>``):

* ``spearman``: rank correlation, whether larger requested volumes give larger ones;
* ``slope``, ``intercept``, ``mae``: the least-squares line of measured on conditioned and the
  mean absolute error in ml (see `calibration`: 1, 0 and 0 when a ml asked is a ml made);
* a variable held at one value over all samples has no slope or rank: it is reported as fixed,
  ``fixed_at`` (the value), ``measured_mean``, ``measured_sd`` and ``mae``, never NaN;
* with real brains: ``wasserstein`` (ml) between the real and sampled distributions of the
  measured volume, ``volume_wasserstein_joint`` over all measured volumes together (see
  `wasserstein`), and, when the real brains carry their recorded volumes, ``coverage`` (share
  of samples inside the real brains' band at their condition, see `calibration`) and the real
  brains' own ``real_spearman``, ``real_slope``, ``real_intercept``, ``real_mae``: what the
  measurement itself reaches, the ceiling for the samples.

* with real brains and a two-level categorical condition (``groups``, default ``diagnosis``):
  ``<group>_effect_<variable>_samples``, ``_real`` and ``_ratio``, Cohen's d of each measured
  volume between its levels for the samples and for the real brains (see `group_effect`): do
  samples conditioned on the diagnosis carry its signature, as strongly as real brains do?

With real brains that carry their recorded volumes (``instrument: real``, the default), every
measurement, of samples and of real brains alike, is read through the real brains' line of
measured on recorded volume (`calibration.fit_instrument`), so the samples' slope, MAE,
Wasserstein and coverage are in the recorded volumes' units and the measurement's own scale is
not charged to the model; the ``real_*`` numbers stay those of the raw measurement (the line
itself), and each row keeps its ``raw_measured_<variable>``.

Samples drawn without a volume condition (unconditional, or conditioned on age alone) get
the distribution numbers only. Samples and real brains alike are measured with the median tissue
contrast of the real brains (`reference_contrast`): generated brains are blurrier, with no pure
CSF left to read CSF's intensity from, and both sets must be measured the same way to be
compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from brainsynth.core.errors import DataError

from .calibration import COVERAGE_BAND_SD, Instrument, calibrate, coverage, fit_instrument, real_band
from .group_effect import group_effects
from .morphology import TissueContrast, measure_morphology, reference_contrast, tissue_contrast
from .volume_sets import SET_SCOPE, SetMetricResult, VolumeSet
from .wasserstein import wasserstein_1d, wasserstein_joint

MORPHOLOGY_VARIABLES = ("ventricular_volume", "brain_volume", "medial_temporal_volume")

JOINT_VARIABLES = ("ventricular_volume", "brain_volume")
"""The volumes of ``volume_wasserstein_joint``: the two global ones (a regional volume has its own distance)."""

GROUP_VARIABLES = ("diagnosis",)
"""Categorical conditions whose two levels are compared by default (``groups``)."""


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


def _add_condition(rows: list[dict], volumes: VolumeSet, variable: str) -> None:
    """Put each volume's value of `variable` (when it has one) into its row as ``conditioned_<variable>``."""
    for row, condition in zip(rows, volumes.conditioning or []):
        if variable in condition:
            row[f"conditioned_{variable}"] = condition[variable]


class MorphologyPreservation:
    """Set metric: calibration (rho, slope, intercept, MAE; or fixed), Wasserstein and coverage of measured volumes.

    Args:
        variables: the conditioning variables measured on the samples (ml).
        contrast: ``real``: measure samples and real brains with the real brains' median tissue
            contrast (blur-proof); ``own``: each volume with its own tissue means (only for sharp samples).
        instrument: ``real``: read every measurement through the real brains' line of measured on
            recorded volume (when they carry recorded volumes), so volumes are in the table's
            units; ``raw``: use the measurement as it reads.
        groups: categorical conditions (0/1 codes, e.g. ``diagnosis``) whose two levels are compared,
            samples against real brains, by Cohen's d of every measured volume; one that no sample
            or real brain carries is skipped.
    """

    name = "morphology_preservation"
    scope = SET_SCOPE
    higher_is_better = True

    def __init__(
        self,
        variables: list[str] | None = None,
        contrast: Literal["real", "own"] = "real",
        groups: list[str] | None = None,
        instrument: Literal["real", "raw"] = "real",
    ) -> None:
        variables = list(MORPHOLOGY_VARIABLES) if variables is None else list(variables)
        unknown = [v for v in variables if v not in MORPHOLOGY_VARIABLES]
        if unknown:
            raise DataError(
                f"morphology_preservation: cannot measure {', '.join(unknown)}; it measures "
                f"{', '.join(MORPHOLOGY_VARIABLES)}."
            )
        if contrast not in ("real", "own"):
            raise DataError(f"morphology_preservation: contrast is 'real' or 'own', not {contrast!r}.")
        if instrument not in ("real", "raw"):
            raise DataError(f"morphology_preservation: instrument is 'real' or 'raw', not {instrument!r}.")
        self.variables = variables
        self.contrast = contrast
        self.instrument = instrument
        self.groups = list(GROUP_VARIABLES) if groups is None else list(groups)

    def __call__(self, samples: VolumeSet, references: VolumeSet | None = None) -> SetMetricResult:
        conditioned = samples.conditioning is not None and any(
            v in row for row in samples.conditioning for v in self.variables
        )
        if not conditioned and references is None:
            raise DataError(
                "morphology_preservation needs the values each sample was conditioned on "
                f"({', '.join(self.variables)}), or real brains to compare the measured volumes with; give one "
                "conditioning row per sample (from a prior conditioned on ventricular or brain volume)."
            )
        contrast = set_contrast(references) if references is not None and self.contrast == "real" else None
        rows = measure_set(samples, self.variables, contrast)
        values, notes = {}, {}
        if references is not None:
            real_rows = measure_set(references, self.variables, contrast)
            values.update(summarise_calibration(real_rows, self.variables, "_real"))
            if self.instrument == "real":
                lines = read_through_instrument(real_rows, [rows, real_rows], self.variables)
                if lines:
                    notes["instrument"] = (
                        "measured volumes (samples and real brains) read through the real brains' line of measured on "
                        f"recorded volume, so they are in the table's units: {describe_instrument(lines)}"
                    )
        values = {**summarise_calibration(rows, self.variables, ""), **values}
        if references is not None:
            values.update(distribution_values(rows, real_rows, self.variables))
            for group in self.groups:
                _add_condition(rows, samples, group)
                _add_condition(real_rows, references, group)
                effects, effect_notes = group_effects(rows, real_rows, group, self.variables)
                values.update(effects)
                notes.update(effect_notes)
            notes["volume_distribution"] = (
                "Wasserstein-1 (scipy.stats.wasserstein_distance, ml) between real and sampled measured volumes; joint: "
                "exact optimal transport (linear_sum_assignment on lcm-replicated points) with each volume in real SDs; "
                f"coverage: share of samples within the real brains' line +-{COVERAGE_BAND_SD:g} residual SDs at their "
                "condition"
            )
            rows += real_rows
        count = sum(1 for r in rows if r["set"] == samples.label)
        how = "the real brains' median tissue contrast (real brains too)" if contrast is not None else "their own tissue means"
        notes["morphology_preservation"] = (
            f"measure_morphology (partial-volume fractions) on {count} samples, with {how}, vs their conditioning; "
            "Spearman rho (scipy), least-squares slope and intercept, MAE in ml; a variable with one value over all "
            "samples is reported as fixed (fixed_at, measured mean and SD)"
        )
        return SetMetricResult(values, rows=rows, notes=notes)
