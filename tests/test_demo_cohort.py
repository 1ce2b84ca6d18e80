"""The demo cohort: determinism, files and affines, physically sensible deformations, reuse, CLI."""

from __future__ import annotations

import csv
import dataclasses

import nibabel as nib
import numpy as np
import pytest
from _data_fixtures import TINY_COHORT, tiny_cohort  # noqa: F401  (fixture)
from scipy import stats

from brainsynth.core.data import Variable
from brainsynth.library.conditioning_table import ConditioningTable
from brainsynth.library.subjects import list_subjects
from brainsynth.core.errors import BrainsynthError, DataError
from brainsynth.core.plugins import registry
from brainsynth.library.mni_template import load_mni_template
from brainsynth.plugins.datasets import cohort_synthesis
from brainsynth.plugins.datasets.demo_cohort import build_demo_cohort


def _table(folder) -> list[dict]:
    with open(folder / "conditioning.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_same_seed_same_cohort_other_seed_other_cohort(tmp_path):
    first = build_demo_cohort(tmp_path / "a", subjects=3, spacing=4.0, seed=5)
    second = build_demo_cohort(tmp_path / "b", subjects=3, spacing=4.0, seed=5)
    other = build_demo_cohort(tmp_path / "c", subjects=3, spacing=4.0, seed=6)

    for name in ("conditioning.tsv", "train.tsv", "val.tsv", "cohort.json"):
        assert (first / name).read_text() == (second / name).read_text()
    for subject in list_subjects(first / "train.tsv") + list_subjects(first / "val.tsv"):
        a = nib.load(str(subject.path)).get_fdata()
        b = nib.load(str(second / "images" / subject.path.name)).get_fdata()
        c = nib.load(str(other / "images" / subject.path.name)).get_fdata()
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (first / "conditioning.tsv").read_text() != (other / "conditioning.tsv").read_text()


def test_cohort_files_tables_and_affines(tiny_cohort):  # noqa: F811
    rows = _table(tiny_cohort)
    assert list(rows[0]) == [
        "subject", "age", "sex", "diagnosis", "ventricular_volume", "brain_volume", "medial_temporal_volume"
    ]
    assert {r["diagnosis"] for r in rows} == {"0", "1"}
    assert len(rows) == TINY_COHORT["subjects"]
    assert {r["sex"] for r in rows} == {"0", "1"}
    assert all(45 <= float(r["age"]) <= 82 for r in rows)
    train, val = list_subjects(tiny_cohort / "train.tsv"), list_subjects(tiny_cohort / "val.tsv")
    assert len(val) == 4 and len(train) == 16
    assert {s.name for s in train} | {s.name for s in val} == {r["subject"] for r in rows}

    image = nib.load(str(train[0].path))
    assert image.shape == (50, 59, 48) and image.get_data_dtype() == np.float32
    assert int(image.header["sform_code"]) == 4
    # 4 mm voxels tiling the template's field of view: the first centre is 2 mm inside its edge
    template = load_mni_template()
    edge = template.affine[:3, 3] - 0.5
    np.testing.assert_allclose(image.affine[:3, 3], edge + 2.0)
    np.testing.assert_allclose(np.diag(image.affine)[:3], [4.0, 4.0, 4.0])
    # the brain sits where the template's brain is: the world centre of mass agrees within a voxel
    data = image.get_fdata()
    centre = image.affine[:3, :3] @ np.array(np.nonzero(data > 0)).mean(axis=1) + image.affine[:3, 3]
    template_centre = template.affine[:3, :3] @ np.array(np.nonzero(template.brain)).mean(axis=1) + template.affine[:3, 3]
    assert np.abs(centre - template_centre).max() < 4.0


def test_recorded_volumes_follow_age_and_sex(tiny_cohort):  # noqa: F811
    rows = _table(tiny_cohort)
    age = np.array([float(r["age"]) for r in rows])
    sex = np.array([int(r["sex"]) for r in rows])
    ventricles = np.array([float(r["ventricular_volume"]) for r in rows])
    brain = np.array([float(r["brain_volume"]) for r in rows])

    assert stats.spearmanr(age, ventricles)[0] > 0.5
    assert stats.spearmanr(age, brain)[0] < -0.2
    assert brain[sex == 1].mean() > brain[sex == 0].mean()
    assert 5.0 < ventricles.min() and ventricles.max() < 80.0
    assert 1000.0 < brain.min() and brain.max() < 2100.0


def test_the_diagnosis_comes_with_age_and_carries_its_signature(tiny_cohort):  # noqa: F811
    rows = _table(tiny_cohort)
    diagnosis = np.array([int(r["diagnosis"]) for r in rows])
    regional = np.array([float(r["medial_temporal_volume"]) for r in rows])
    ventricles = np.array([float(r["ventricular_volume"]) for r in rows])
    # seed 3: 5 of 20 diagnosed; medial temporal 12.0 +- 1.3 against 14.5 +- 1.0 ml (d -2.4)
    assert 3 <= diagnosis.sum() <= 8
    assert regional[diagnosis == 1].mean() < regional[diagnosis == 0].mean() - 1.5
    assert ventricles[diagnosis == 1].mean() > ventricles[diagnosis == 0].mean()
    assert 8.0 < regional.min() and regional.max() < 18.0
    assert cohort_synthesis.diagnosis_probability(45.0) == pytest.approx(0.10)
    assert cohort_synthesis.diagnosis_probability(82.0) == pytest.approx(0.50)
    drawn = [cohort_synthesis.draw_subject(i, seed=0) for i in range(400)]
    diagnosed, age = np.array([s.diagnosis for s in drawn]), np.array([s.age for s in drawn])
    assert 0.2 <= diagnosed.mean() <= 0.35
    assert age[diagnosed == 1].mean() > age[diagnosed == 0].mean() + 4.0


def test_the_diagnosis_wastes_medial_temporal_tissue_only():
    subject = dataclasses.replace(cohort_synthesis.draw_subject(0, seed=11), medial_temporal_loss=0.0)
    grid = cohort_synthesis.cohort_grid(4.0)
    healthy = cohort_synthesis.synthesize(subject, grid)
    wasted = cohort_synthesis.synthesize(dataclasses.replace(subject, medial_temporal_loss=0.4), grid)
    lost = healthy.medial_temporal_volume - wasted.medial_temporal_volume
    assert 3.0 < lost < 0.4 * healthy.medial_temporal_volume
    # most of the tissue it loses is inside the region (the rest under its soft edge: 6.97 ml in
    # all, 4.66 ml inside, at 4 mm), and the ventricles do not change
    assert lost < healthy.brain_volume - wasted.brain_volume < 1.7 * lost
    assert wasted.ventricular_volume == pytest.approx(healthy.ventricular_volume, abs=1e-6)
    region = cohort_synthesis._medial_temporal_region(grid.shape, grid.affine.tobytes())
    assert wasted.t1[region].mean() < 0.9 * healthy.t1[region].mean()  # darker: the image shows the loss
    changed = np.abs(wasted.t1 - healthy.t1) > 0.01 * healthy.t1.max()
    assert changed.sum() < 3 * region.sum()  # nothing changes far from the region


def test_recorded_volumes_are_those_of_the_warped_maps(tmp_path):
    subject = cohort_synthesis.draw_subject(0, seed=11)
    grid = cohort_synthesis.cohort_grid(4.0)
    young = dataclasses.replace(subject, ventricle_dilation=-1.0, atrophy=0.0)
    old = dataclasses.replace(subject, ventricle_dilation=5.0, atrophy=0.06)
    a, b = cohort_synthesis.synthesize(young, grid), cohort_synthesis.synthesize(old, grid)
    assert b.ventricular_volume > 1.8 * a.ventricular_volume
    assert b.brain_volume < 0.95 * a.brain_volume
    # darker voxels where the ventricles grew: the image shows what the table records
    assert (b.t1 < 0.45 * b.t1.max()).sum() > (a.t1 < 0.45 * a.t1.max()).sum()


def test_deformation_never_folds():
    prepared = cohort_synthesis._prepare(4.0)
    grid = cohort_synthesis.cohort_grid(2.0)
    points = np.indices(grid.shape, dtype=np.float32).reshape(3, -1)
    world = (grid.affine[:3, :3] @ points + grid.affine[:3, 3:]).astype(np.float32)
    base = cohort_synthesis.draw_subject(0, seed=0)
    for dilation, atrophy, scale in ((cohort_synthesis.MAX_DILATION_MM, 0.1, 1.1), (-4.0, 0.0, 0.9)):
        subject = dataclasses.replace(base, ventricle_dilation=dilation, atrophy=atrophy, head_scale=scale)
        mapped = cohort_synthesis.backward_map(world.copy(), subject, prepared).reshape(3, *grid.shape)
        jacobian = np.stack([np.stack(np.gradient(mapped[i], grid.spacing), axis=0) for i in range(3)])
        determinant = np.linalg.det(np.moveaxis(jacobian, (0, 1), (-2, -1)))
        assert determinant.min() > 0.0


def test_reuse_and_refusal(tmp_path):
    folder = build_demo_cohort(tmp_path / "cohort", subjects=2, spacing=4.0, seed=1)
    stamp = (folder / "images" / "sub-0000.nii.gz").stat().st_mtime_ns
    assert build_demo_cohort(folder, subjects=2, spacing=4.0, seed=1) == folder
    assert (folder / "images" / "sub-0000.nii.gz").stat().st_mtime_ns == stamp
    with pytest.raises(BrainsynthError, match="holds a demo cohort built with other settings"):
        build_demo_cohort(folder, subjects=2, spacing=4.0, seed=2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BrainsynthError, match="exists and is not a demo cohort"):
        build_demo_cohort(tmp_path / "other", subjects=2, spacing=4.0, seed=1)
    with pytest.raises(DataError, match="at least 2 subjects"):
        build_demo_cohort(tmp_path / "x", subjects=1)
    with pytest.raises(DataError, match="between 1 and 8 mm"):
        build_demo_cohort(tmp_path / "x", subjects=2, spacing=0.5)
    assert not list(tmp_path.glob(".*building*"))


def test_dataset_component_serves_the_cohort(tiny_cohort):  # noqa: F811
    component = registry().get("dataset", "demo_cohort")
    block = {"directory": str(tiny_cohort), **TINY_COHORT, "roi": [48, 64, 48]}
    source = component.build(component.schema.validate(block))

    assert source.splits == ("train", "val") and source.roi_size == (48, 64, 48)
    item = source.split("val", train=False)[0]
    assert tuple(item["image"].shape) == (1, 48, 64, 48) and item["subject"] == source.subjects("val")[0].name
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert source.conditioning_table == tiny_cohort / "conditioning.tsv"
    train = [s.name for s in source.subjects("train")]
    table = ConditioningTable.read(
        source.conditioning_table, [Variable("age", equalize=True), Variable("sex", kind="categorical"), Variable("ventricular_volume")], train
    )
    assert table.subjects == train and table.num_levels == {"sex": 2}


def test_command_builds_and_reuses(run_cli, tmp_path):
    out = tmp_path / "demo"
    built = run_cli("data", "demo-cohort", str(out), "--subjects", "2", "--spacing", "4", "--seed", "7")
    assert built.code == 0, built
    assert "demo cohort built in" in built.out and (out / "conditioning.tsv").is_file()
    again = run_cli("data", "demo-cohort", str(out), "--subjects", "2", "--spacing", "4", "--seed", "7")
    assert again.code == 0 and "demo cohort reused" in again.out
    clash = run_cli("data", "demo-cohort", str(out), "--subjects", "3", "--spacing", "4", "--seed", "7")
    assert clash.code == 2 and "holds a demo cohort built with other settings" in clash.err
    assert "Traceback" not in clash.err
