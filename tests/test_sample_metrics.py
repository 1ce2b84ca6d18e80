"""Set metrics of generated brains: diversity, MMD, FID, morphology preservation, evaluate_samples."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import tiny_cohort, write_nifti  # noqa: F401  (fixture)
from monai.metrics.fid import get_fid_score
from monai.networks.nets.resnet import ResNetFeatures
from scipy import ndimage

from brainsynth.core import plugins
from brainsynth.core.errors import CheckpointError, DataError, RecipeError
from brainsynth.plugins.metrics.feature_networks import medicalnet_features
from brainsynth.plugins.metrics.fid import FrechetDistance, frechet_distance
from brainsynth.plugins.metrics.mmd import MaximumMeanDiscrepancy
from brainsynth.library.morphology_summaries import agreement
from brainsynth.plugins.metrics.morphology_preservation import MorphologyPreservation
from brainsynth.plugins.metrics.ms_ssim_diversity import MultiScaleSSIMDiversity, distinct_pairs
from brainsynth.library.sample_evaluation import evaluate_samples
from brainsynth.library.volume_sets import load_volume_set

SHAPE = (48, 48, 48)  # the smallest grid a 5-scale MS-SSIM accepts
SMALL = (24, 24, 24)  # enough for the feature networks and MMD


def smooth_volumes(count: int, seed: int = 0, shape=SHAPE) -> list[np.ndarray]:
    """Distinct blob volumes: smoothed noise, so MS-SSIM between them is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    return [ndimage.gaussian_filter(rng.random(shape), 3).astype(np.float32) for _ in range(count)]


def cohort_table(cohort: Path) -> list[dict]:
    with open(cohort / "conditioning.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_set_metrics_are_their_own_kind():
    registry = plugins.registry()
    assert set(registry.names("set_metric")) >= {"ms_ssim_diversity", "mmd", "fid", "morphology_preservation", "sharpness"}
    assert not set(registry.names("set_metric")) & set(registry.names("metric"))
    assert set(registry.names("metric")) >= {"ms_ssim", "mae", "mse", "psnr"}
    # the per-volume contract is unchanged
    ms_ssim = registry.build("metric", {"name": "ms_ssim"})
    volume = torch.from_numpy(smooth_volumes(1)[0])[None, None]
    assert float(ms_ssim(volume, volume)[0]) == pytest.approx(1.0, abs=1e-5)


def test_identical_volumes_give_ms_ssim_diversity_one_and_mmd_zero():
    same = load_volume_set([smooth_volumes(1)[0]] * 2)
    different = load_volume_set(smooth_volumes(2, seed=1), label="real")

    result = MultiScaleSSIMDiversity()(same, different)
    assert result.values["ms_ssim_diversity"] == pytest.approx(1.0, abs=1e-5)
    assert result.values["ms_ssim_diversity_real"] < 0.9  # distinct volumes are more diverse

    assert MaximumMeanDiscrepancy()(different, different).values["mmd"] == pytest.approx(0.0, abs=1e-12)


def test_shifted_sets_give_a_positive_mmd_that_grows_with_the_shift():
    base = smooth_volumes(4, seed=2, shape=SMALL)
    references = load_volume_set(base, label="real")
    mmd = MaximumMeanDiscrepancy(pool=4)
    small = mmd(load_volume_set([np.roll(v, 2, axis=0) for v in base]), references).values["mmd"]
    large = mmd(load_volume_set([np.roll(v, 8, axis=0) for v in base]), references).values["mmd"]
    assert 0.0 < small < large


def test_diversity_pairs_are_all_pairs_or_a_seeded_subset():
    assert distinct_pairs(4, 10) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    subset = distinct_pairs(40, 7)
    assert len(set(subset)) == 7 and all(i < j for i, j in subset) and subset == distinct_pairs(40, 7)


def test_frechet_distance_matches_monai_and_is_zero_for_a_set_with_itself():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=generator, dtype=torch.float64) * 2.0
    y = torch.randn(9, 6, generator=generator, dtype=torch.float64) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy deprecates the sqrtm argument MONAI passes
        expected = float(get_fid_score(x, y))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    wide = torch.randn(10, 300, generator=generator, dtype=torch.float64)  # more features than volumes
    assert frechet_distance(wide, wide) == pytest.approx(0.0, abs=1e-9)


def test_fid_without_weights_is_labelled_random_features_and_zero_on_itself():
    volumes = load_volume_set(smooth_volumes(3, seed=3, shape=SMALL))
    fid = FrechetDistance()
    result = fid(volumes, volumes)
    assert set(result.values) == {"fid_random_features"}  # never reported as "fid"
    assert result.values["fid_random_features"] == pytest.approx(0.0, abs=1e-6)
    assert "NOT FID" in result.notes["fid_random_features"]
    others = load_volume_set([np.roll(v, 8, axis=1) for v in smooth_volumes(3, seed=3, shape=SMALL)])
    assert fid(others, volumes).values["fid_random_features"] > 0.0
    # the same seeded network every time
    assert torch.equal(FrechetDistance().network.features(volumes.volumes), fid.network.features(volumes.volumes))


def test_missing_fid_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "resnet_10_23dataset.pth"
    with pytest.raises(CheckpointError, match=r"resnet_10_23dataset\.pth does not exist"):
        plugins.registry().build("set_metric", {"name": "fid", "weights": str(missing)})
    not_resnet = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, not_resnet)
    with pytest.raises(CheckpointError, match="not a MedicalNet ResNet"):
        FrechetDistance(weights=str(not_resnet))


def test_medicalnet_weights_are_read_from_a_local_file_with_their_depth(tmp_path):
    torch.manual_seed(1)
    trunk = ResNetFeatures("resnet10", pretrained=False, spatial_dims=3, in_channels=1)
    # Tencent's layout: wrapped in state_dict, DataParallel prefix, plus a segmentation head
    state = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2, 512, 1, 1, 1)
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": state}, path)

    network = medicalnet_features(path)
    assert "ResNet-10" in network.label and not network.is_random
    assert torch.equal(network.trunk.conv1.weight, trunk.conv1.weight)
    volumes = load_volume_set(smooth_volumes(2, seed=4, shape=SMALL))
    fid = FrechetDistance(weights=str(path))
    assert set(fid(volumes, volumes).values) == {"fid"}
    with pytest.raises(CheckpointError, match="lacks"):
        medicalnet_features(path, depth=18)


def test_spearman_and_slope_of_a_perfectly_monotone_relation():
    conditioned = [10.0, 20.0, 30.0, 40.0, 50.0]
    fit = agreement(conditioned, [2 * c + 5 for c in conditioned])
    assert fit["spearman"] == pytest.approx(1.0) and fit["slope"] == pytest.approx(2.0) and fit["count"] == 5
    monotone = agreement(conditioned, [1.0, 1.5, 9.0, 9.5, 40.0])
    assert monotone["spearman"] == pytest.approx(1.0)
    assert agreement(conditioned, conditioned[::-1])["spearman"] == pytest.approx(-1.0)
    # NaN measurements are left out; too few or constant values give NaN, not a number
    assert agreement(conditioned, [1.0, 2.0, np.nan, 4.0, 5.0])["count"] == 4
    assert np.isnan(agreement([1.0, 2.0], [1.0, 2.0])["spearman"])
    assert np.isnan(agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["slope"])


def test_morphology_preservation_on_brains_with_known_volumes(tiny_cohort):  # noqa: F811
    table = cohort_table(tiny_cohort)
    paths = [tiny_cohort / "images" / f"{row['subject']}.nii.gz" for row in table]
    samples = load_volume_set(paths, conditioning=table)  # 'subject' is text and is left out
    result = MorphologyPreservation()(samples, None)
    assert result.values["ventricular_volume_spearman"] >= 0.9
    assert result.values["brain_volume_spearman"] >= 0.9
    assert 0.7 < result.values["ventricular_volume_slope"] < 1.5
    row = result.rows[0]
    assert row["set"] == "sample" and row["name"] == table[0]["subject"]
    assert row["conditioned_ventricular_volume"] == pytest.approx(float(table[0]["ventricular_volume"]))
    assert row["measured_ventricular_volume"] > 0

    with pytest.raises(DataError, match="conditioned on"):
        MorphologyPreservation()(load_volume_set(paths[:3]), None)
    with pytest.raises(DataError, match="cannot measure age"):
        MorphologyPreservation(variables=["age"])


def test_evaluate_samples_on_nifti_paths(tiny_cohort):  # noqa: F811
    table = cohort_table(tiny_cohort)
    paths = [tiny_cohort / "images" / f"{row['subject']}.nii.gz" for row in table]
    lines = []
    summary, rows, notes = evaluate_samples(
        paths[:6], paths[6:12], table[:6], reference_conditioning=table[6:12],
        metrics=[{"name": "ms_ssim_diversity", "max_pairs": 2}, {"name": "mmd"}, {"name": "fid"},
                 {"name": "morphology_preservation"}],
        log=lines.append,
    )
    for key in ("ms_ssim_diversity", "ms_ssim_diversity_real", "mmd", "fid_random_features",
                "ventricular_volume_spearman", "ventricular_volume_slope", "brain_volume_spearman",
                "brain_volume_slope", "ventricular_volume_real_spearman", "brain_volume_real_slope"):
        assert np.isfinite(summary[key]), key
    assert "fid" not in summary
    assert 0.0 < summary["ms_ssim_diversity"] < 1.0 and summary["mmd"] > 0.0
    assert [r["set"] for r in rows] == ["sample"] * 6 + ["real"] * 6
    assert rows[0]["name"] == table[0]["subject"] and "measured_brain_volume" in rows[0]
    assert rows[0]["conditioned_age"] == pytest.approx(float(table[0]["age"]))
    assert len(lines) == 4 and "NOT FID" in notes["fid_random_features"]


def test_evaluate_samples_refuses_bad_inputs(tmp_path, tiny_cohort):  # noqa: F811
    real = [tiny_cohort / "images" / "sub-0000.nii.gz", tiny_cohort / "images" / "sub-0001.nii.gz"]
    with pytest.raises(DataError, match=r"sample volume 1: .*nope\.nii\.gz does not exist"):
        evaluate_samples([real[0], tmp_path / "nope.nii.gz"], real, None)
    small = write_nifti(tmp_path / "small.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"sample volume 1 \(small\) has shape"):
        evaluate_samples([real[0], small], real, None)
    with pytest.raises(RecipeError, match="samples have shape"):
        evaluate_samples([small, small], real, None)
    with pytest.raises(RecipeError, match="unknown set_metric .mae.. Available: "):
        evaluate_samples(real, real, None, metrics=[{"name": "mae"}])
    with pytest.raises(RecipeError, match=r"metrics\.0\.max_pair: unknown key .*Did you mean 'max_pairs'"):
        evaluate_samples(real, real, None, metrics=[{"name": "ms_ssim_diversity", "max_pair": 3}])
    with pytest.raises(DataError, match="2 sample volumes but 1 conditioning rows"):
        evaluate_samples(real, real, [{"ventricular_volume": 20.0}])
