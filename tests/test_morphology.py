"""Morphology estimates from T1 alone track the demo cohort's recorded volumes."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from monai.data import MetaTensor
from scipy import stats

from brainsynth.core.errors import DataError
from brainsynth.library.volume_transforms import build_transforms, transform_settings
from brainsynth.library.morphology_measurement import measure_many, measure_morphology, tissue_means


def _truth(folder) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(folder / "conditioning.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return (
        [r["subject"] for r in rows],
        np.array([float(r["ventricular_volume"]) for r in rows]),
        np.array([float(r["brain_volume"]) for r in rows]),
    )


def test_estimates_correlate_with_the_recorded_volumes(tiny_cohort):  # noqa: F811
    subjects, ventricles, brain = _truth(tiny_cohort)
    estimates = [measure_morphology(tiny_cohort / "images" / f"{s}.nii.gz") for s in subjects]

    ventricle_rho = stats.spearmanr([e.ventricular_volume for e in estimates], ventricles)[0]
    brain_rho = stats.spearmanr([e.brain_volume for e in estimates], brain)[0]

    assert ventricle_rho >= 0.9 and brain_rho >= 0.9, (ventricle_rho, brain_rho)
    # and the estimates are volumes of the right size, not just monotone scores
    ratios = np.array([e.ventricular_volume for e in estimates]) / ventricles
    assert 0.7 < np.median(ratios) < 1.4
    assert 0.9 < np.median(np.array([e.brain_volume for e in estimates]) / brain) < 1.1


def test_an_roi_crop_with_its_affine_measures_the_same(tiny_cohort):  # noqa: F811
    path = tiny_cohort / "images" / "sub-0003.nii.gz"
    whole = measure_morphology(path)
    # min-max scaled, cropped and padded to 48 x 64 x 48: the brain stays whole, the grid moves
    cropped = build_transforms(transform_settings(roi=[[1, 49], [0, 64], [0, 48]]), train=False)({"image": str(path)})["image"]
    assert isinstance(cropped, MetaTensor) and tuple(cropped.shape) == (1, 48, 64, 48)
    moved = measure_morphology(cropped)
    assert moved.ventricular_volume == pytest.approx(whole.ventricular_volume, rel=0.03)
    assert moved.brain_volume == pytest.approx(whole.brain_volume, rel=0.03)
    # a wrong affine (30 mm too far back) puts the ventricle search elsewhere
    shifted = np.asarray(cropped.affine).copy()
    shifted[1, 3] -= 30.0
    wrong = measure_morphology(cropped.as_tensor(), affine=shifted)
    assert wrong.ventricular_volume < 0.6 * whole.ventricular_volume


def test_batches_arrays_and_bad_inputs(tiny_cohort):  # noqa: F811
    image = nib.load(str(tiny_cohort / "images" / "sub-0000.nii.gz"))
    array = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))
    batch = torch.stack([array[None], array[None]])
    first, second = measure_many(batch, affine=image.affine)
    assert first == second == measure_morphology(image)

    flat = measure_morphology(np.ones((10, 10, 10), np.float32), affine=np.eye(4))
    assert np.isnan(flat.ventricular_volume) and np.isnan(flat.brain_volume)
    with pytest.raises(DataError, match="needs the image's affine"):
        measure_morphology(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(DataError, match="one 3D volume"):
        measure_morphology(np.zeros((4, 4), np.float32), affine=np.eye(4))


def test_tissue_means_find_three_classes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 3.0, 1000) for m in (40.0, 120.0, 200.0)])
    np.testing.assert_allclose(tissue_means(values), [40.0, 120.0, 200.0], atol=1.0)
    assert tissue_means(np.full(100, 5.0)) is None
