"""Cohen's d between the two levels of a categorical condition, samples against real brains."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.library.group_effect_size import cohens_d, group_effects


def test_cohens_d_of_known_groups():
    # means 2 and 5, both variances 1 (ddof 1): d = 3; reversed order, -3
    assert cohens_d([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(3.0)
    assert cohens_d([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(-3.0)
    # pooled over unequal sizes (NaN left out): means 2 and 6, variances 1 (n 3) and 8 (n 2)
    assert cohens_d([1.0, 2.0, 3.0], [4.0, 8.0, float("nan")]) == pytest.approx(4.0 / np.sqrt((2 * 1 + 1 * 8) / 3))
    assert cohens_d([1.0], [2.0, 3.0]) is None
    assert cohens_d([1.0, 1.0], [1.0, 1.0]) is None


def _rows(label, levels, volumes):
    return [{"set": label, "name": f"{label}{i}", "conditioned_diagnosis": g, "measured_medial_temporal_volume": v}
            for i, (g, v) in enumerate(zip(levels, volumes))]


def test_effects_of_samples_and_real_brains_and_their_ratio():
    real = _rows("real", [0, 0, 0, 1, 1, 1], [15.0, 16.0, 17.0, 12.0, 13.0, 14.0])  # d -3
    samples = _rows("sample", [0, 0, 1, 1], [15.0, 17.0, 13.0, 15.0])  # means 16, 14, SD sqrt(2): d -sqrt(2)
    values, notes = group_effects(samples, real, "diagnosis", ["medial_temporal_volume"])
    assert values["diagnosis_effect_medial_temporal_volume_real"] == pytest.approx(-3.0)
    assert values["diagnosis_effect_medial_temporal_volume_samples"] == pytest.approx(-np.sqrt(2.0))
    assert values["diagnosis_effect_medial_temporal_volume_ratio"] == pytest.approx(np.sqrt(2.0) / 3.0)
    assert "Cohen's d" in notes["diagnosis_effect"] and "not computable" not in notes["diagnosis_effect"]
    # standard errors: real 3 + 3 at d -3: sqrt(6/9 + 9/12); samples 2 + 2 at d -sqrt(2): sqrt(4/4 + 2/8)
    real_se, samples_se = np.sqrt(6 / 9 + 9 / 12), np.sqrt(1 + 2 / 8)
    assert values["diagnosis_effect_medial_temporal_volume_real_se"] == pytest.approx(real_se)
    assert values["diagnosis_effect_medial_temporal_volume_samples_se"] == pytest.approx(samples_se)
    ratio_se = np.sqrt(2.0) / 3.0 * np.hypot(samples_se / np.sqrt(2.0), real_se / 3.0)
    assert values["diagnosis_effect_medial_temporal_volume_ratio_se"] == pytest.approx(ratio_se)


def test_too_small_groups_are_said_in_words_never_nan():
    real = _rows("real", [0, 0, 0, 1], [15.0, 16.0, 17.0, 12.0])
    samples = _rows("sample", [0, 0, 1, 1], [15.0, 17.0, 13.0, 15.0])
    values, notes = group_effects(samples, real, "diagnosis", ["medial_temporal_volume"])
    assert values == {"diagnosis_effect_medial_temporal_volume_samples": pytest.approx(-np.sqrt(2.0)),
                      "diagnosis_effect_medial_temporal_volume_samples_se": pytest.approx(np.sqrt(1 + 2 / 8))}
    assert "not computable for the real" in notes["diagnosis_effect"] and "1 at 1" in notes["diagnosis_effect"]
    values, notes = group_effects(_rows("sample", [1, 1], [1.0, 2.0]), real, "diagnosis", ["medial_temporal_volume"])
    assert values == {} and "the same two levels" in notes["diagnosis_effect"]
    assert group_effects([{"measured_medial_temporal_volume": 1.0}], [], "diagnosis", ["medial_temporal_volume"]) == ({}, {})
