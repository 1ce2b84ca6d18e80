"""Calibration, fixed variables, Wasserstein distances, coverage and sharpness on cases with known answers."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
from _data_fixtures import tiny_cohort, write_nifti  # noqa: F401  (fixture)
from scipy import ndimage
from scipy.optimize import linprog
from scipy.spatial.distance import cdist

from brainsynth.library.morphology_calibration import Band, calibrate, coverage, real_band
from brainsynth.plugins.metrics.morphology_preservation import MorphologyPreservation
from brainsynth.library.sample_evaluation import evaluate_samples
from brainsynth.library.volume_sharpness import mean_gradient, sharpness_ratio
from brainsynth.plugins.metrics.sharpness import Sharpness
from brainsynth.library.volume_sets import load_volume_set
from brainsynth.library.wasserstein_distance import wasserstein_1d, wasserstein_joint


def test_calibration_of_a_known_line():
    conditioned = np.array([10.0, 20.0, 30.0, 40.0])
    fit = calibrate(conditioned, 0.5 * conditioned + 3.0)
    assert fit.fixed is None and fit.count == 4
    assert fit.slope == pytest.approx(0.5) and fit.intercept == pytest.approx(3.0)
    assert fit.spearman == pytest.approx(1.0)
    assert fit.mae == pytest.approx(np.mean(np.abs(0.5 * conditioned + 3.0 - conditioned)))  # 9.5 ml
    assert calibrate([np.nan], [1.0]) is None


def test_a_fixed_variable_is_reported_as_fixed_with_mean_and_spread_never_nan():
    fit = calibrate([1550.0] * 3, [1500.0, 1510.0, 1520.0])
    assert fit.fixed == 1550.0 and fit.slope is None and fit.spearman is None
    assert fit.measured_mean == pytest.approx(1510.0) and fit.measured_sd == pytest.approx(10.0)
    assert fit.mae == pytest.approx(40.0)


def test_coverage_of_the_real_band():
    recorded = np.array([10.0, 20.0, 30.0, 40.0])
    band = real_band(recorded, recorded + np.array([1.0, -1.0, -1.0, 1.0]))
    # line y = x (these residuals are orthogonal to 1 and x), residual SD sqrt(4 / (4 - 2)), band +- 2 SD
    assert band.slope == pytest.approx(1.0) and band.intercept == pytest.approx(0.0, abs=1e-9)
    assert band.half_width == pytest.approx(2.0 * np.sqrt(2.0))
    # at condition 25 the band is 25 +- 2.83: 25 and 27 are in, 29 and 35 are out
    assert coverage(band, [25.0] * 4, [25.0, 27.0, 29.0, 35.0]) == pytest.approx(0.5)
    assert coverage(Band(2.0, 1.0, 0.5), [1.0, 2.0], [3.0, 5.4]) == pytest.approx(1.0)
    assert real_band([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]) is None  # one recorded value: no line


def test_univariate_wasserstein_of_shifted_sets():
    assert wasserstein_1d([0.0, 1.0], [2.0, 3.0]) == pytest.approx(2.0)
    assert wasserstein_1d([0.0, 1.0, np.nan], [0.0, 1.0]) == pytest.approx(0.0)
    assert wasserstein_1d([], [1.0]) is None


def _transport_lp(a: np.ndarray, b: np.ndarray) -> float:
    """The 1-Wasserstein distance of two uniform point sets by the transport linear program (independent check)."""
    cost = cdist(a, b)
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones(m))  # each real point sends 1/n
    cols = np.kron(np.ones(n), np.eye(m))  # each sample receives 1/m
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[np.full(n, 1 / n), np.full(m, 1 / m)],
                     bounds=(0, None), method="highs")
    return float(result.fun)


def test_joint_wasserstein_is_exact_optimal_transport():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(6, 2)) * [5.0, 80.0] + [25.0, 1500.0]
    scale = real.std(axis=0, ddof=1)
    # a translation by v (in real SDs) costs exactly |v|
    distance, exact = wasserstein_joint(real, real + scale * [0.3, 0.4])
    assert exact and distance == pytest.approx(0.5)
    assert wasserstein_joint(real, np.repeat(real, 2, axis=0))[0] == pytest.approx(0.0, abs=1e-12)
    # unequal sizes (6 real, 4 samples): the same as the transport LP on the standardised points
    samples = rng.normal(size=(4, 2)) * [6.0, 60.0] + [30.0, 1450.0]
    distance, exact = wasserstein_joint(real, samples)
    assert exact and distance == pytest.approx(_transport_lp(real / scale, samples / scale), rel=1e-9)


def test_joint_wasserstein_beyond_the_exact_size_subsamples(monkeypatch):
    import brainsynth.library.wasserstein_distance as module

    monkeypatch.setattr(module, "EXACT_POINTS", 6)
    real = np.array(list(itertools.product([0.0, 1.0], [0.0, 1.0, 2.0])))  # lcm(6, 7) = 42 > 6
    samples = np.vstack([real, real[:1]]) + [0.0, 100.0]
    distance, exact = wasserstein_joint(real, samples)
    assert not exact and distance > 50.0  # a far shift still reads far


def test_sharpness_of_a_ramp_and_of_blur(tmp_path):
    ramp = np.broadcast_to(np.arange(20, dtype=np.float64)[:, None, None], (20, 8, 8))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    assert mean_gradient(ramp, affine) == pytest.approx(0.5)  # one unit per voxel of 2 mm
    rng = np.random.default_rng(1)
    sharp = [ndimage.gaussian_filter(rng.random((24, 24, 24)), 1.0) * 10 for _ in range(3)]
    real = load_volume_set(sharp, label="real")
    assert Sharpness()(real, real).values["sharpness_ratio"] == pytest.approx(1.0)
    ratios = [Sharpness()(load_volume_set([ndimage.gaussian_filter(v, s) for v in sharp]), real).values["sharpness_ratio"]
              for s in (1.0, 2.0)]
    assert ratios[1] < ratios[0] < 0.9  # more blur, lower ratio
    assert np.isnan(sharpness_ratio(np.array([np.nan]), np.array([1.0])))


def test_morphology_preservation_reports_a_fixed_brain_volume_and_the_distribution_numbers(tiny_cohort):  # noqa: F811
    with open(tiny_cohort / "conditioning.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    paths = [tiny_cohort / "images" / f"{row['subject']}.nii.gz" for row in table]
    # "samples": real brains asked for their own ventricles but all for one brain volume
    conditioning = [{"ventricular_volume": row["ventricular_volume"], "brain_volume": 1550.0} for row in table[:10]]
    samples = load_volume_set(paths[:10], conditioning=conditioning)
    references = load_volume_set(paths[10:], label="real", conditioning=table[10:])
    result = MorphologyPreservation()(samples, references)
    values = result.values
    assert all(np.isfinite(v) for v in values.values()), values
    assert "brain_volume_spearman" not in values and "brain_volume_slope" not in values
    assert values["brain_volume_fixed_at"] == 1550.0 and values["brain_volume_measured_sd"] > 0.0
    measured = np.array([row["measured_brain_volume"] for row in result.rows if row["set"] == "sample"])
    assert values["brain_volume_measured_mean"] == pytest.approx(measured.mean())
    assert values["brain_volume_mae"] == pytest.approx(np.mean(np.abs(measured - 1550.0)))
    for key in ("spearman", "slope", "intercept", "mae", "wasserstein", "coverage", "real_slope", "real_mae"):
        assert f"ventricular_volume_{key}" in values, key
    assert values["ventricular_volume_spearman"] > 0.9 and 0.0 <= values["ventricular_volume_coverage"] <= 1.0
    assert values["volume_wasserstein_joint"] > 0.0


def test_evaluate_samples_has_the_calibrated_metrics_by_default(tiny_cohort):  # noqa: F811
    with open(tiny_cohort / "conditioning.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    paths = [tiny_cohort / "images" / f"{row['subject']}.nii.gz" for row in table]
    fixed = [{**row, "brain_volume": 1500.0} for row in table[:4]]
    summary, rows, _ = evaluate_samples(paths[:4], paths[4:8], fixed, reference_conditioning=table[4:8],
                                        metrics=[{"name": "sharpness"}, {"name": "morphology_preservation"}])
    assert summary["sharpness_ratio"] == pytest.approx(1.0, abs=0.1)  # real brains against real brains
    assert "brain_volume_fixed_at" in summary and not any(np.isnan(v) for v in summary.values())
    assert json.dumps(summary, allow_nan=False)
    assert all("sharpness" in row for row in rows)


def test_unconditioned_samples_still_get_the_distribution_numbers(tiny_cohort):  # noqa: F811
    paths = sorted((tiny_cohort / "images").glob("*.nii.gz"))
    summary, _, _ = evaluate_samples(paths[:5], paths[5:10], None, metrics=[{"name": "morphology_preservation"}])
    assert set(summary) == {
        "ventricular_volume_wasserstein", "brain_volume_wasserstein", "medial_temporal_volume_wasserstein",
        "volume_wasserstein_joint",
    }
    assert all(np.isfinite(v) and v > 0 for v in summary.values())


def test_samples_conditioned_on_the_diagnosis_are_compared_with_real_brains_by_effect_size(tiny_cohort):  # noqa: F811
    with open(tiny_cohort / "conditioning.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    paths = [tiny_cohort / "images" / f"{row['subject']}.nii.gz" for row in table]
    # seed 3 diagnoses subjects 2, 5, 7, 9 and 13: "samples" (real brains conditioned on their own
    # diagnosis) hold 2 diagnosed of 6, the real brains 3 of 7
    chosen, real = [0, 1, 2, 3, 5, 6], [7, 8, 9, 10, 11, 13, 14]
    conditions = [{"diagnosis": table[i]["diagnosis"], "age": table[i]["age"]} for i in chosen]
    summary, rows, notes = evaluate_samples(
        [paths[i] for i in chosen], [paths[i] for i in real], conditions,
        reference_conditioning=[{"diagnosis": table[i]["diagnosis"]} for i in real],
        metrics=[{"name": "morphology_preservation"}],
    )
    key = "diagnosis_effect_medial_temporal_volume"
    assert summary[f"{key}_samples"] < -1.0 and summary[f"{key}_real"] < -1.0  # diagnosed brains have less
    assert summary[f"{key}_ratio"] == pytest.approx(summary[f"{key}_samples"] / summary[f"{key}_real"])
    assert "diagnosis_effect_ventricular_volume_ratio" in summary and not any(np.isnan(v) for v in summary.values())
    assert "not computable" not in notes["diagnosis_effect"]
    assert {row["conditioned_diagnosis"] for row in rows if row["set"] == "real"} == {0.0, 1.0}
    # one diagnosed real brain: no real d, said in words, and no ratio
    summary, _, notes = evaluate_samples(
        [paths[i] for i in chosen], paths[10:16], conditions,
        reference_conditioning=[{"diagnosis": row["diagnosis"]} for row in table[10:16]],
        metrics=[{"name": "morphology_preservation", "variables": ["medial_temporal_volume"]}],
    )
    assert f"{key}_samples" in summary and f"{key}_real" not in summary and f"{key}_ratio" not in summary
    assert "not computable for the real" in notes["diagnosis_effect"]
