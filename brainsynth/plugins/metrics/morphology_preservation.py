"""Morphology preservation: do generated brains have the volumes they were conditioned on?

Each sample's ventricular and brain volume is measured with `measure_morphology` (the same
estimate the data side uses) and compared with the value it was sampled with (keys per
variable, e.g. ``ventricular_volume_<suffix>``):

* ``spearman``: rank correlation, whether larger requested volumes give larger ones;
* ``slope``, ``intercept``, ``mae``: the least-squares line of measured on conditioned and the
  mean absolute error in ml (see `brainsynth.library.morphology_calibration`: 1, 0 and 0 when a ml asked is a ml made);
* a variable held at one value over all samples has no slope or rank: it is reported as fixed,
  ``fixed_at`` (the value), ``measured_mean``, ``measured_sd`` and ``mae``, never NaN;
* with real brains: ``wasserstein`` (ml) between the real and sampled distributions of the
  measured volume, ``volume_wasserstein_joint`` over all measured volumes together (see
  `brainsynth.library.wasserstein_distance`), and, when the real brains carry their recorded volumes, ``coverage`` (share
  of samples inside the real brains' band at their condition, see `morphology_calibration`) and the real
  brains' own ``real_spearman``, ``real_slope``, ``real_intercept``, ``real_mae``: what the
  measurement itself reaches, the ceiling for the samples.

* with real brains and a two-level categorical condition (``groups``, default ``diagnosis``):
  ``<group>_effect_<variable>_samples``, ``_real`` and ``_ratio``, Cohen's d of each measured
  volume between its levels for the samples and for the real brains (see `brainsynth.library.group_effect_size`): do
  samples conditioned on the diagnosis carry its signature, as strongly as real brains do?

With real brains that carry their recorded volumes (``instrument: real``, the default), every
measurement, of samples and of real brains alike, is read through the real brains' line of
measured on recorded volume (`morphology_calibration.fit_instrument`), so the samples' slope, MAE,
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

from typing import Literal

from brainsynth.core.errors import DataError
from brainsynth.library.group_effect_size import group_effects
from brainsynth.library.morphology_calibration import COVERAGE_BAND_SD
from brainsynth.library.morphology_summaries import (
    MORPHOLOGY_VARIABLES,
    describe_instrument,
    distribution_values,
    measure_set,
    read_through_instrument,
    set_contrast,
    summarise_calibration,
)
from brainsynth.library.volume_sets import SetMetricResult, VolumeSet

GROUP_VARIABLES = ("diagnosis",)
"""Categorical conditions whose two levels are compared by default (``groups``)."""


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
