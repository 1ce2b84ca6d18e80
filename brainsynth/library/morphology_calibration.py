"""Calibration of measured against conditioned values, and coverage of the real cohort's spread.

Rank correlation says whether a larger condition gives a larger brain structure; it says
nothing about how large. Calibration does: the least-squares line ``measured = intercept +
slope * conditioned`` (slope 1 and intercept 0 when a ml asked is a ml made) and the mean
absolute error in ml. A variable held at one value over all samples has no slope: it is
reported as *fixed*, with the value it was fixed at and the measured mean and spread, never as
NaN.

Coverage asks whether each sample is a brain that could exist at its condition. The real
brains give the spread at a condition: their own calibration line (measured on recorded) plus or
minus `COVERAGE_BAND_SD` standard deviations of their residuals about it. A sample is covered
when its measured value falls inside that band at the value it was conditioned on. For normal
residuals about 95 % of real brains are covered, so a coverage near 0.95 is the target and lower
is worse (a perfect model also reads about 0.95, not 1).

The measurement itself is an instrument with its own scale: on real brains of recorded volume
it reads ``measured = intercept + slope * recorded`` with a slope that need not be 1 (the
partial-volume estimate compresses the demo cohort's ventricles to a slope of about 0.8).
`fit_instrument` fits that line on the real brains and `Instrument.correct` reads every
measurement back in the recorded volumes' units, so the samples are judged in the table's own
units and the instrument's scale is not charged to the model; the line itself is reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

COVERAGE_BAND_SD = 2.0
"""Half-width of the real brains' band about their calibration line, in SDs of their residuals."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Measured against conditioned values of one variable (ml).

    ``fixed`` holds the conditioned value when every sample was conditioned on it; slope,
    intercept and Spearman are then not computed (None). Otherwise they are NaN only where the
    measurements cannot give them (fewer than 2 or 3 finite pairs, or one measured value).
    """

    count: int
    mae: float
    measured_mean: float
    measured_sd: float
    fixed: float | None = None
    slope: float | None = None
    intercept: float | None = None
    spearman: float | None = None


def finite_pairs(conditioned: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite numbers."""
    c = np.asarray(conditioned, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(m)
    return c[keep], m[keep]


def calibrate(conditioned: Sequence[float], measured: Sequence[float]) -> Calibration | None:
    """Calibration of the pairs; None without any finite conditioned value.

    Whether the variable is fixed is decided on the conditioned values alone, so a failed
    measurement never turns a fixed variable into a NaN correlation.
    """
    asked = np.asarray(conditioned, dtype=np.float64)
    asked = asked[np.isfinite(asked)]
    if asked.size == 0:
        return None
    c, m = finite_pairs(conditioned, measured)
    nan = float("nan")
    common = dict(
        count=int(c.size), mae=float(np.mean(np.abs(m - c))) if c.size else nan,
        measured_mean=float(m.mean()) if m.size else nan, measured_sd=float(m.std(ddof=1)) if m.size > 1 else nan,
    )
    if np.ptp(asked) == 0:
        return Calibration(**common, fixed=float(asked[0]))
    slope = intercept = spearman = nan
    if c.size >= 2 and np.ptp(c) > 0:
        slope, intercept = (float(v) for v in np.polyfit(c, m, 1))
    if c.size >= 3 and np.ptp(c) > 0 and np.ptp(m) > 0:
        from scipy import stats  # scipy: imported when scored, not when plugins load

        spearman = float(stats.spearmanr(c, m).statistic)
    return Calibration(**common, slope=slope, intercept=intercept, spearman=spearman)


@dataclasses.dataclass(frozen=True)
class Band:
    """The real brains' spread at a condition: ``intercept + slope * c`` plus or minus ``half_width``."""

    slope: float
    intercept: float
    half_width: float

    def bounds(self, conditioned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre = self.intercept + self.slope * np.asarray(conditioned, dtype=np.float64)
        return centre - self.half_width, centre + self.half_width


def real_band(recorded: Sequence[float], measured: Sequence[float], width_sd: float = COVERAGE_BAND_SD) -> Band | None:
    """The band of the real brains (their line, ± `width_sd` residual SDs); None with fewer than 3 pairs or one value."""
    c, m = finite_pairs(recorded, measured)
    if c.size < 3 or np.ptp(c) == 0:
        return None
    slope, intercept = np.polyfit(c, m, 1)
    residuals = m - (intercept + slope * c)
    sd = float(np.sqrt((residuals**2).sum() / (c.size - 2)))  # two parameters were fitted
    return Band(slope=float(slope), intercept=float(intercept), half_width=width_sd * sd)


def coverage(band: Band, conditioned: Sequence[float], measured: Sequence[float]) -> float | None:
    """Share of the finite (conditioned, measured) pairs whose measurement lies inside `band`."""
    c, m = finite_pairs(conditioned, measured)
    if c.size == 0:
        return None
    low, high = band.bounds(c)
    return float(np.mean((m >= low) & (m <= high)))


@dataclasses.dataclass(frozen=True)
class Instrument:
    """How the measurement reads real brains of recorded volume: ``measured = intercept + slope * recorded``."""

    slope: float
    intercept: float
    count: int

    def correct(self, measured: float) -> float:
        """The recorded volume a measurement stands for (the line inverted)."""
        return (measured - self.intercept) / self.slope


MIN_INSTRUMENT_BRAINS = 5
"""Fewer real brains than this give no instrument line: the measurement is then used as it reads."""


def fit_instrument(recorded: Sequence[float], measured: Sequence[float]) -> Instrument | None:
    """The real brains' line of measured on recorded; None when it cannot be trusted to invert.

    That is with fewer than `MIN_INSTRUMENT_BRAINS` finite pairs, one recorded value, or a
    slope that is not positive (the measurement then does not follow the volume at all).
    """
    c, m = finite_pairs(recorded, measured)
    if c.size < MIN_INSTRUMENT_BRAINS or np.ptp(c) == 0:
        return None
    slope, intercept = (float(v) for v in np.polyfit(c, m, 1))
    if not slope > 0:
        return None
    return Instrument(slope=slope, intercept=intercept, count=int(c.size))
