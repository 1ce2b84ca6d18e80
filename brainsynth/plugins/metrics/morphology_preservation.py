"""Morphology preservation: do generated brains have the volumes they were conditioned on?

Each sample's ventricular and brain volume is measured with `measure_morphology` (the same
estimate the data side uses) and compared with the value it was sampled with: the Spearman rank
correlation says whether larger requested volumes give larger brains/ventricles, the
least-squares slope of measured on conditioned says by how much (1 = one ml more asked, one ml
more made). When the real brains carry their recorded volumes, the same numbers on them
(``<variable>_real_spearman``, ...) show what the measurement itself reaches, the ceiling for
the samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from brainsynth.core.errors import DataError

from .morphology import measure_morphology
from .volume_sets import SET_SCOPE, SetMetricResult, VolumeSet

MORPHOLOGY_VARIABLES = ("ventricular_volume", "brain_volume")


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
    result["spearman"] = float(stats.spearmanr(c, m).statistic)
    result["slope"] = float(stats.linregress(c, m).slope)
    return result


def _measure(volumes: VolumeSet, variables: Sequence[str]) -> list[dict]:
    if volumes.affine is None:
        raise DataError(
            f"morphology_preservation: the {volumes.label} volumes have no affine; give NIfTI files or the affine "
            "of the space they were decoded in (volumes are measured in MNI millimetres)."
        )
    rows = []
    for index, name in enumerate(volumes.names):
        measured = measure_morphology(volumes.volumes[index, 0].numpy(), volumes.affine).as_dict()
        row = {"set": volumes.label, "name": name}
        for variable in variables:
            if volumes.conditioning is not None and variable in volumes.conditioning[index]:
                row[f"conditioned_{variable}"] = volumes.conditioning[index][variable]
            row[f"measured_{variable}"] = measured[variable]
        rows.append(row)
    return rows


def _summarise(rows: list[dict], variables: Sequence[str], prefix: str) -> dict[str, float]:
    values = {}
    for variable in variables:
        pairs = [(r[f"conditioned_{variable}"], r[f"measured_{variable}"]) for r in rows if f"conditioned_{variable}" in r]
        if not pairs:
            continue
        fit = agreement(*zip(*pairs))
        values[f"{variable}{prefix}_spearman"] = fit["spearman"]
        values[f"{variable}{prefix}_slope"] = fit["slope"]
    return values


class MorphologyPreservation:
    """Set metric: Spearman rho and slope of measured vs conditioned ventricular and brain volume of the samples.

    Args:
        variables: the conditioning variables measured on the samples (ml).
    """

    name = "morphology_preservation"
    scope = SET_SCOPE
    higher_is_better = True

    def __init__(self, variables: list[str] | None = None) -> None:
        variables = list(MORPHOLOGY_VARIABLES) if variables is None else list(variables)
        unknown = [v for v in variables if v not in MORPHOLOGY_VARIABLES]
        if unknown:
            raise DataError(
                f"morphology_preservation: cannot measure {', '.join(unknown)}; it measures "
                f"{', '.join(MORPHOLOGY_VARIABLES)}."
            )
        self.variables = variables

    def __call__(self, samples: VolumeSet, references: VolumeSet | None = None) -> SetMetricResult:
        if samples.conditioning is None:
            raise DataError(
                "morphology_preservation needs the values each sample was conditioned on "
                f"({', '.join(self.variables)}); give one conditioning row per sample."
            )
        if not any(v in row for row in samples.conditioning for v in self.variables):
            raise DataError(
                f"morphology_preservation: the samples' conditioning has none of {', '.join(self.variables)}; "
                "sample with a prior conditioned on ventricular or brain volume."
            )
        rows = _measure(samples, self.variables)
        values = _summarise(rows, self.variables, "")
        if references is not None and references.conditioning is not None:
            real_rows = _measure(references, self.variables)
            values.update(_summarise(real_rows, self.variables, "_real"))
            rows += real_rows
        count = sum(1 for r in rows if r["set"] == samples.label)
        note = f"measure_morphology on {count} samples vs their conditioning; Spearman rho (scipy) and least-squares slope"
        return SetMetricResult(values, rows=rows, notes={"morphology_preservation": note})
