"""MONAI chains: ROI semantics, affines, normalisation, augmentation, caching and bad volumes."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_fixtures import shifted_affine, write_nifti
from monai.data import MetaTensor
from monai.transforms import RandAdjustContrastd, RandAffined, RandGaussianNoised, RandShiftIntensityd

from brainsynth.core.data import Subject
from brainsynth.library.volume_data import VolumeSource
from brainsynth.core.errors import DataError, RecipeError
from brainsynth.library.volume_transforms import (
    VolumeError,
    augmentation_transforms,
    build_transforms,
    parse_roi,
    transform_settings,
)

PAPER_ROI = [[16, 176], [16, 240], [96, 256]]


def _load(path, train=False, **settings) -> MetaTensor:
    return build_transforms(transform_settings(**settings), train=train)({"image": str(path)})["image"]


def _source(tmp_path, arrays: dict, affine=None, **options) -> VolumeSource:
    subjects = [Subject(name, write_nifti(tmp_path / f"{name}.nii.gz", array, affine)) for name, array in arrays.items()]
    chain = {k: options.pop(k) for k in list(options) if k not in ("cache", "cache_dir")}
    return VolumeSource({"train": subjects}, transform_settings(**chain), **options)


def test_paper_roi_is_the_originals_end_exclusive_crop(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(1, 255, size=(180, 244, 260), dtype=np.uint8)
    array[0, 0, 0], array[-1, -1, -1] = 0, 255  # min-max scaling is then exactly a / 255
    affine = shifted_affine(1.0)
    path = write_nifti(tmp_path / "big.nii", array, affine)

    image = _load(path, roi=PAPER_ROI)

    assert tuple(image.shape) == (1, 160, 224, 160)
    expected = array[16:176, 16:240, 96:256].astype(np.float32) / 255.0
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    # the crop's affine: voxel (0, 0, 0) of the crop is voxel (16, 16, 96) of the file
    np.testing.assert_allclose(np.asarray(image.affine), affine @ _translation(16, 16, 96))
    assert image.dtype == torch.float32


def test_roi_clips_to_the_image_then_pads_symmetrically(tmp_path):
    array = np.ones((150, 230, 200), np.float32)
    array[0, 0, 0] = 0.0
    affine = shifted_affine(1.0)
    image = _load(write_nifti(tmp_path / "small.nii", array, affine), roi=PAPER_ROI)

    # kept: 16..149 (134), 16..229 (214), 96..199 (104); padded by (13, 13), (5, 5), (28, 28)
    expected = np.zeros((160, 224, 160), np.float32)
    expected[13:147, 5:219, 28:132] = 1.0
    np.testing.assert_array_equal(image[0].numpy(), expected)
    np.testing.assert_allclose(np.asarray(image.affine), affine @ _translation(16 - 13, 16 - 5, 96 - 28))


def test_centre_roi_and_roi_validation(tmp_path):
    array = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    image = _load(write_nifti(tmp_path / "c.nii.gz", array), roi=[4, 4, 4])
    np.testing.assert_allclose(image[0].numpy(), array[2:6, 2:6, 2:6] / array.max(), atol=1e-6)
    assert parse_roi([[16, 176], [16, 240], [96, 256]]).size == (160, 224, 160)
    for bad in ([4, 4], [[0, 4], [5, 5], [0, 4]], [[0, 4], 3.5, [0, 4]], [0, 4, 4]):
        with pytest.raises(RecipeError, match="roi"):
            parse_roi(bad)


def test_canonical_reorients_array_and_affine(tmp_path):
    array = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    las[:3, 3] = [10, -5, 0]
    path = write_nifti(tmp_path / "las.nii.gz", array, las)

    stored = _load(path)
    canonical = _load(path, canonical=True)

    np.testing.assert_allclose(stored[0].numpy(), array / array.max(), atol=1e-6)
    np.testing.assert_allclose(canonical[0].numpy(), array[::-1] / array.max(), atol=1e-6)
    affine = np.asarray(canonical.affine)
    assert affine[0, 0] > 0
    # the same voxel lands at the same world point either way
    np.testing.assert_allclose(affine @ [3, 0, 0, 1], las @ [0, 0, 0, 1])


def test_normalisation_and_clamp(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.normal(5.0, 2.0, size=(10, 10, 10)).astype(np.float32)
    path = write_nifti(tmp_path / "n.nii.gz", array)

    minmax = _load(path)
    zscore = _load(path, normalize="zscore")

    assert float(minmax.min()) == 0.0 and float(minmax.max()) == 1.0
    expected = np.clip((array - array.mean()) / array.std(), -1.0, 1.0)
    np.testing.assert_allclose(zscore[0].numpy(), expected, atol=1e-4)
    with pytest.raises(RecipeError, match="normalize"):
        transform_settings(normalize="scale")


def test_augmentation_uses_the_originals_ranges_and_evaluation_never_augments(tmp_path):
    settings = transform_settings(roi=[8, 8, 8], augment=True, augmentation_probability=0.3, augmentation_strength=2.0)
    affine, contrast, shift, noise = augmentation_transforms(settings)
    assert [t.prob for t in (affine, contrast, shift, noise)] == [0.3] * 4
    assert isinstance(affine, RandAffined)
    grid = affine.rand_affine.rand_affine_grid
    assert grid.rotate_range == pytest.approx([0.44] * 3)
    assert grid.translate_range == pytest.approx([4] * 3)
    assert grid.scale_range == pytest.approx([0.07] * 3)
    assert isinstance(contrast, RandAdjustContrastd) and contrast.adjuster.gamma == pytest.approx((0.97, 1.03))
    assert isinstance(shift, RandShiftIntensityd) and shift.shifter.offsets == pytest.approx((0.0, 0.1))
    assert isinstance(noise, RandGaussianNoised) and noise.rand_gaussian_noise.std == pytest.approx(0.04)

    rng = np.random.default_rng(2)
    source = _source(tmp_path, {"s": rng.random((10, 10, 10)).astype(np.float32)}, roi=[8, 8, 8], augment=True, augmentation_probability=1.0)
    evaluation = source.split("train", train=False)
    first, second = evaluation[0]["image"], evaluation[0]["image"]
    assert torch.equal(first, second)
    training = source.split("train", train=True)
    augmented = training[0]["image"]
    assert tuple(augmented.shape) == (1, 8, 8, 8)
    assert not torch.equal(augmented, first)
    assert float(augmented.min()) >= 0.0 and float(augmented.max()) <= 1.0


def test_items_keep_affine_subject_and_path(tmp_path):
    affine = shifted_affine(2.0)
    source = _source(tmp_path, {"s1": np.arange(216, dtype=np.float32).reshape(6, 6, 6), "s2": np.arange(216, dtype=np.float32).reshape(6, 6, 6)[::-1].copy()}, affine=affine, roi=[[1, 5], [0, 6], [2, 6]])
    item = source.split("train")[1]
    assert set(item) == {"image", "subject", "path"}
    assert item["subject"] == "s2" and item["path"].endswith("s2.nii.gz")
    assert isinstance(item["image"], MetaTensor) and tuple(item["image"].shape) == (1, 4, 6, 4)
    np.testing.assert_allclose(np.asarray(item["image"].affine), affine @ _translation(1, 0, 2))
    assert source.splits == ("train",) and source.roi_size == (4, 6, 4)
    with pytest.raises(DataError, match="no 'val' split"):
        source.split("val")


def test_memory_cache_never_rereads_a_volume(tmp_path):
    source = _source(tmp_path, {"s": np.arange(27, dtype=np.float32).reshape(3, 3, 3)}, cache="memory")
    dataset = source.split("train", train=False)
    before = dataset[0]["image"].clone()
    (tmp_path / "s.nii.gz").unlink()  # a re-read would now fail
    assert torch.equal(source.split("train", train=True)[0]["image"], before)


def test_disk_cache_persists_and_notices_edited_files(tmp_path):
    cache = tmp_path / "cache"
    array = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    first = _source(tmp_path, {"s": array}, cache="disk", cache_dir=str(cache))
    value = first.split("train")[0]["image"]
    assert len(list(cache.glob("*.pt"))) == 1
    again = VolumeSource(first._splits, first.settings, cache="disk", cache_dir=cache)
    assert torch.equal(again.split("train")[0]["image"], value)
    assert "stamp" not in again.split("train")[0]
    write_nifti(tmp_path / "s.nii.gz", array[::-1].copy())
    edited = VolumeSource(first._splits, first.settings, cache="disk", cache_dir=cache)
    assert not torch.equal(edited.split("train")[0]["image"], value)
    assert len(list(cache.glob("*.pt"))) == 2


def _bad_volume(tmp_path, kind: str):
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "truncated":
        write_nifti(path, np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "two_d":
        write_nifti(path, np.ones((8, 8), np.float32))
    elif kind == "four_d":
        write_nifti(path, np.ones((4, 4, 4, 3), np.float32))
    elif kind == "nan":
        array = np.ones((4, 4, 4), np.float32)
        array[1, 2, 3] = np.nan
        write_nifti(path, array)
    elif kind == "not_nifti":
        with gzip.open(path, "wb") as handle:
            handle.write(b"this is not an image")
    return path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("truncated", "cannot read this image"),
        ("not_nifti", "cannot read this image"),
        ("two_d", r"expected one 3D volume, got an image of shape \(8, 8\)"),
        ("four_d", r"expected one 3D volume, got an image of shape \(4, 4, 4, 3\)"),
        ("nan", "1 voxel\\(s\\) are NaN or infinite"),
    ],
)
@pytest.mark.parametrize("cache", ["none", "memory"])
def test_bad_volumes_raise_one_clear_error_naming_the_file(tmp_path, kind, expected, cache):
    path = _bad_volume(tmp_path, kind)
    source = VolumeSource({"train": [Subject(kind, path)]}, transform_settings(), cache=cache)

    with pytest.raises(VolumeError, match=expected) as error:
        source.split("train")[0]

    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "applying transform" not in message and isinstance(error.value, DataError)


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_a_volume_removed_after_listing_is_named_when_loaded(tmp_path, cache):
    source = _source(tmp_path, {"gone": np.ones((3, 3, 3), np.float32)}, cache=cache, cache_dir=str(tmp_path / "c"))
    (tmp_path / "gone.nii.gz").unlink()
    with pytest.raises(VolumeError, match="gone.nii.gz: cannot read this image"):
        source.split("train")[0]


def test_worker_errors_reach_the_main_process_as_one_line(tmp_path):
    path = _bad_volume(tmp_path, "nan")
    source = VolumeSource({"train": [Subject("nan", path)]}, transform_settings())
    loader = torch.utils.data.DataLoader(source.split("train"), batch_size=1, num_workers=1)
    with pytest.raises(VolumeError) as error:
        next(iter(loader))
    assert str(error.value).startswith(f"{path}: 1 voxel(s) are NaN") and "\n" not in str(error.value)


def test_four_d_with_one_volume_is_taken_as_three_d(tmp_path):
    path = write_nifti(tmp_path / "x.nii.gz", np.arange(120, dtype=np.float32).reshape(4, 5, 6, 1))  # not constant: that is refused
    assert tuple(_load(path).shape) == (1, 4, 5, 6)
    assert nib.load(str(path)).ndim == 4


def _translation(i: int, j: int, k: int) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = [i, j, k]
    return shift
