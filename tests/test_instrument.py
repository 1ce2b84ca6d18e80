"""The measurement's instrument line: fitted on real brains, inverted for every measurement."""

import math

import pytest

from brainsynth.library.morphology_calibration import MIN_INSTRUMENT_BRAINS, fit_instrument
from brainsynth.library.morphology_summaries import read_through_instrument, summarise_calibration


def test_line_is_recovered_and_inverted():
    recorded = [10.0, 15.0, 20.0, 30.0, 40.0]
    measured = [4.0 + 0.8 * r for r in recorded]
    line = fit_instrument(recorded, measured)
    assert line.slope == pytest.approx(0.8) and line.intercept == pytest.approx(4.0) and line.count == 5
    assert line.correct(4.0 + 0.8 * 25.0) == pytest.approx(25.0)


@pytest.mark.parametrize(
    "recorded, measured",
    [
        ([10.0, 20.0, 30.0, 40.0][: MIN_INSTRUMENT_BRAINS - 1], [12.0, 20.0, 28.0, 36.0][: MIN_INSTRUMENT_BRAINS - 1]),  # too few
        ([20.0] * 6, [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]),  # one recorded value
        ([10.0, 20.0, 30.0, 40.0, 50.0], [50.0, 40.0, 30.0, 20.0, 10.0]),  # does not follow the volume
        ([10.0, 20.0, math.nan, 40.0, 50.0, 60.0], [1.0, 2.0, 3.0, math.nan, 5.0, 6.0]),  # 4 finite pairs
    ],
)
def test_untrustworthy_lines_are_refused(recorded, measured):
    assert fit_instrument(recorded, measured) is None


def test_samples_are_read_in_recorded_units_and_keep_their_raw_reading():
    real = [{"conditioned_ventricular_volume": r, "measured_ventricular_volume": 2.0 + 0.5 * r} for r in (10, 20, 30, 40, 50)]
    # a perfect model: each sample has the volume it asked for, read by the same instrument
    samples = [{"conditioned_ventricular_volume": c, "measured_ventricular_volume": 2.0 + 0.5 * c} for c in (12, 25, 33, 47)]
    raw = summarise_calibration(samples, ["ventricular_volume"], "")
    assert raw["ventricular_volume_slope"] == pytest.approx(0.5)
    lines = read_through_instrument(real, [samples, real], ["ventricular_volume", "brain_volume"])
    assert list(lines) == ["ventricular_volume"]  # no brain volumes recorded: left as read
    fixed = summarise_calibration(samples, ["ventricular_volume"], "")
    assert fixed["ventricular_volume_slope"] == pytest.approx(1.0)
    assert fixed["ventricular_volume_intercept"] == pytest.approx(0.0, abs=1e-9)
    assert fixed["ventricular_volume_mae"] == pytest.approx(0.0, abs=1e-9)
    assert samples[0]["raw_measured_ventricular_volume"] == pytest.approx(8.0)
    assert real[0]["measured_ventricular_volume"] == pytest.approx(10.0)
