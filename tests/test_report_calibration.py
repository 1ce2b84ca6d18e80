"""The report shows the calibrated and distribution metrics: numbers, words and plots."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
from _data_fixtures import write_nifti

from brainsynth.library.report import ReportInputs, describe_metric, write_report

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def rows() -> list[dict]:
    made = []
    for index in range(6):
        made.append({"set": "sample", "name": f"sample_{index}", "conditioned_ventricular_volume": 10.0 + 6 * index,
                     "measured_ventricular_volume": 8.0 + 5 * index, "conditioned_brain_volume": 1550.0,
                     "measured_brain_volume": 1500.0 + 7 * index, "sharpness": 0.02 + 0.001 * index})
        made.append({"set": "real", "name": f"real_{index}", "conditioned_ventricular_volume": 12.0 + 5 * index,
                     "measured_ventricular_volume": 12.5 + 5 * index + (-1) ** index,
                     "conditioned_brain_volume": 1450.0 + 30 * index, "measured_brain_volume": 1455.0 + 30 * index,
                     "sharpness": 0.04})
        made.append({"set": "reconstructed", "name": f"real_{index}", "sharpness": 0.03})
    return made


METRICS = {
    "ventricular_volume_slope": 0.83, "ventricular_volume_intercept": -0.6, "ventricular_volume_mae": 4.5,
    "ventricular_volume_wasserstein": 3.2, "ventricular_volume_coverage": 0.5, "brain_volume_fixed_at": 1550.0,
    "brain_volume_measured_mean": 1517.5, "brain_volume_measured_sd": 12.8, "brain_volume_mae": 32.5,
    "volume_wasserstein_joint": 0.7, "sharpness_ratio": 0.56, "sharpness_reconstructed_ratio": 0.75,
}


def test_every_new_metric_is_described_with_which_way_is_better():
    for key in METRICS:
        text = describe_metric(key)
        assert text, key
    assert "fixed" in describe_metric("brain_volume_fixed_at")
    assert "lower is better" in describe_metric("ventricular_volume_wasserstein")
    assert "lower is better" in describe_metric("ventricular_volume_mae")
    assert "closer to 1 is better" in describe_metric("sharpness_ratio")
    assert "0.95" in describe_metric("ventricular_volume_coverage")


def test_report_carries_the_numbers_words_and_plots(tmp_path):
    sample = write_nifti(tmp_path / "sample_0.nii.gz", np.random.default_rng(0).random((12, 12, 12), np.float32), AFFINE)
    index = write_report(tmp_path / "report", ReportInputs(title="calibrated", metrics=METRICS, sampled=[sample],
                                                           morphology=rows()))
    folder = index.parent
    assert json.loads((folder / "summary.json").read_text()) == METRICS
    page, markdown = index.read_text(), (folder / "summary.md").read_text()
    for text in (page, markdown):
        assert "brain_volume_fixed_at" in text and "held fixed" in text and "Wasserstein" in text
        assert "coverage" in text and "sharpness_ratio" in text and "Distributions of measured volumes" in text
    assert "| `volume_wasserstein_joint` | 0.7 |" in markdown
    for name in ("morphology_ventricular_volume.png", "morphology_brain_volume.png", "distribution_ventricular_volume.png",
                 "distribution_brain_volume.png", "distribution_joint.png", "sharpness.png"):
        assert f'src="{name}"' in page and f"({name})" in markdown, name
        image = matplotlib.image.imread(folder / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.05, name  # drawn, not blank


def test_the_diagnosis_effect_is_described_and_plotted_by_group(tmp_path):
    made = []
    for index in range(8):
        diagnosis = index % 2
        made.append({"set": "sample", "name": f"sample_{index}", "conditioned_diagnosis": float(diagnosis),
                     "measured_medial_temporal_volume": 15.0 - 2.0 * diagnosis + 0.3 * index})
        made.append({"set": "real", "name": f"real_{index}", "conditioned_diagnosis": float(diagnosis),
                     "measured_medial_temporal_volume": 15.5 - 2.5 * diagnosis + 0.2 * index})
    metrics = {"diagnosis_effect_medial_temporal_volume_samples": -1.6,
               "diagnosis_effect_medial_temporal_volume_real": -2.4,
               "diagnosis_effect_medial_temporal_volume_ratio": 0.67}
    assert "closer to 1 is better" in describe_metric("diagnosis_effect_medial_temporal_volume_ratio")
    assert "by diagnosis" in describe_metric("diagnosis_effect_medial_temporal_volume_ratio")
    assert "Cohen's d" in describe_metric("diagnosis_effect_medial_temporal_volume_samples")
    assert describe_metric("diagnosis_effect_medial_temporal_volume_real")
    index = write_report(tmp_path / "report", ReportInputs(title="diagnosis", metrics=metrics, morphology=made,
                                                           notes={"diagnosis_effect": "Cohen's d (pooled SD)"}))
    page = index.read_text()
    name = "effect_diagnosis_medial_temporal_volume.png"
    assert f'src="{name}"' in page and "the samples carry 0.67 of the real effect" in page
    image = matplotlib.image.imread(index.parent / name)
    assert image.shape[0] > 200 and image[..., :3].std() > 0.05
