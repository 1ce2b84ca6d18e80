"""Reconstruction losses on known inputs, 2.5D slicing, and perceptual weights from local files only."""

from __future__ import annotations

import os

import pytest
import torch
from monai.networks.nets.resnet import ResNetFeatures

import brainsynth
from brainsynth.core import global_batch
from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.core.plugins import registry
from brainsynth.plugins.losses.backbones import RandomBackbone, build_backbone
from brainsynth.library.lpips_alex import LPIPSAlex, installed_stlpips_weights, load_lpips_alex
from brainsynth.library.lpips_squeeze import LPIPSSqueeze, load_lpips_squeeze
from brainsynth.library.lpips_vgg import LPIPSVGG, installed_stlpips_vgg_weights, load_lpips_vgg
from brainsynth.plugins.losses.perceptual import random_slices
from brainsynth.plugins.losses.spectral import magnitude_loss, phase_loss


def build_loss(**block):
    return registry().build("loss", block)


def test_pixel_losses_on_known_inputs():
    target = torch.zeros(1, 1, 4, 4, 4)
    reconstruction = torch.full_like(target, 0.5)
    assert build_loss(name="mse")(reconstruction, target).total.item() == 0.25
    assert build_loss(name="l1")(reconstruction, target).components["pixel_l1"].item() == 0.5


def test_gradient_difference_charges_a_ramp_in_place_of_a_step():
    step = torch.zeros(1, 1, 8, 4, 4)
    step[:, :, 4:] = 1.0
    ramp = step.clone()
    ramp[:, :, 3] = 0.5
    ramp[:, :, 4] = 0.5  # the step spread over two voxels: the same mean, a softer edge
    loss = build_loss(name="gradient_difference", pixel_factor=1.0, gradient_factor=2.0)
    out = loss(ramp, step)
    torch.testing.assert_close(out.components["pixel_mse"], torch.tensor(2 * 0.25 / 8))
    # along x the differences are (0.5, 0, 0.5) in place of (0, 1, 0): squares sum to 1.5 over 7 per
    # row; along y and z they are 0, and the term is the mean of the three axes
    torch.testing.assert_close(out.components["gradient_difference"], torch.tensor(1.5 / 7 / 3))
    torch.testing.assert_close(out.total, out.components["pixel_mse"] + 2.0 * out.components["gradient_difference"])
    assert loss(step, step).total.item() == 0.0
    shifted = torch.roll(step, shifts=1, dims=2)  # a misplaced step costs in both terms
    assert build_loss(name="gradient_difference", pixel_factor=0.0)(shifted, step).total.item() > 0
    with pytest.raises(RecipeError, match="gradient_factor"):  # validated as a recipe block is
        brainsynth.build("loss", {"name": "gradient_difference", "gradient_factor": -1.0})


def test_spectral_magnitude_of_a_constant_offset_is_its_square():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 6, 8, 4)
    # an offset c moves only the DC bin of the orthonormal FFT, by c * sqrt(N): mean square = c^2
    out = build_loss(name="spectral")(target + 0.3, target)
    torch.testing.assert_close(out.components["spectral"], torch.tensor(0.09))
    torch.testing.assert_close(out.components["pixel_mse"], torch.tensor(0.09))
    torch.testing.assert_close(out.total, torch.tensor(0.18))


def test_a_circular_shift_keeps_magnitudes_but_not_phases():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 8, 8, 8)
    shifted = torch.roll(target, shifts=2, dims=3)
    assert magnitude_loss(shifted, target).item() < 1e-10
    assert phase_loss(shifted, target).item() > 0.1 and phase_loss(target, target).item() < 1e-6
    loss = build_loss(name="spectral", magnitude_factor=0.5, phase_factor=0.5, pixel_factor=0.0)
    out = loss(shifted, target)
    torch.testing.assert_close(out.total, 0.5 * out.components["spectral"] + 0.5 * out.components["phase"])


def test_jukebox_perceptual_weights_its_parts_and_scores_three_views():
    torch.manual_seed(0)
    loss = build_loss(name="jukebox_perceptual", backbone="random", spectral_factor=2.0,
                      perceptual_factor=0.1, pixel_factor=3.0, slice_fraction=0.25)
    assert loss.is_random_backbone and "NOT a perceptual loss" in loss.describe()
    seen = []
    backbone = loss.perceptual.backbone
    backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    target = torch.rand(2, 1, 8, 12, 16)
    reconstruction = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    out = loss(reconstruction, target)
    # a quarter of the 2 x size slices along each axis, each slice a 1-channel image of the other two axes
    assert seen == [(4, 1, 12, 16), (6, 1, 8, 16), (8, 1, 8, 12)]
    views = [out.components[f"perceptual_{i}"] for i in range(3)]
    expected = 2.0 * out.components["spectral"] + 0.1 * sum(views) + 3.0 * out.components["pixel_mse"]
    torch.testing.assert_close(out.total, expected)
    out.total.backward()
    assert reconstruction.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    identical = build_loss(name="perceptual", backbone="random")(target, target)
    assert all(v.item() < 1e-10 for k, v in identical.components.items())


def test_in_a_training_step_the_slices_come_from_the_steps_generator():
    """So that every process count draws the same slices (see test_distributed_tokenizer)."""
    loss = build_loss(name="perceptual", backbone="random", slice_fraction=0.25, pixel_factor=0.0)
    target = torch.rand(2, 1, 8, 12, 16)
    reconstruction = target + 0.1 * torch.randn_like(target)
    with global_batch.step_scope(seed=3, step=5) as step:
        views = [loss(reconstruction, target).components[f"perceptual_{i}"] for i in range(3)]
        again = [loss(reconstruction, target).components[f"perceptual_{i}"] for i in range(3)]
    generator = step.generator("perceptual_slices")
    for axis, (view, repeated) in enumerate(zip(views, again)):
        count = 2 * target.shape[2 + axis]
        drawn = torch.randperm(count, generator=generator)[: round(0.25 * count)]
        expected = loss.perceptual.backbone(random_slices(reconstruction * 2 - 1, axis, drawn), random_slices(target * 2 - 1, axis, drawn))
        torch.testing.assert_close(view, expected.mean())
        assert torch.equal(view, repeated)


def test_perceptual_backbones_without_weights_say_which_file_is_needed(tmp_path):
    if installed_stlpips_weights() is None:
        with pytest.raises(RecipeError, match="alex_shift_tolerant.pth.*set 'weights: /path/to/file'"):
            build_loss(name="jukebox_perceptual", backbone="alex")
    missing = tmp_path / "resnet_10_23dataset.pth"
    with pytest.raises(CheckpointError, match=f"{missing} does not exist.*resnet_10_23dataset.pth"):
        build_loss(name="perceptual", backbone="medicalnet", weights=str(missing))
    with pytest.raises(RecipeError, match="needs a local weights file"):
        build_backbone("medicalnet")
    if installed_stlpips_vgg_weights() is None:
        with pytest.raises(RecipeError, match="vgg_shift_tolerant.pth.*set 'weights: /path/to/file'"):
            build_loss(name="perceptual", backbone="vgg")
    with pytest.raises(RecipeError, match="squeezenet1_1-b8a52dc0.pth.*squeeze.pth.*set 'weights: /path/to/file'"):
        build_loss(name="jukebox_perceptual", backbone="squeeze")


def _torchvision_layout(trunk: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``slice<n>.<index>.<param>`` -> torchvision's ``features.<index>.<param>``."""
    return {f"features.{key.split('.', 1)[1]}": value for key, value in trunk.state_dict().items() if "filt" not in key}


@pytest.mark.parametrize("make, load, layouts", [
    (LPIPSVGG, load_lpips_vgg, ("shift_tolerant", "vanilla")),
    (LPIPSSqueeze, load_lpips_squeeze, (None,)),
])
def test_lpips_vgg_and_squeeze_load_full_and_torchvision_files_strictly(tmp_path, make, load, layouts):
    x, y = torch.rand(2, 1, 40, 48) * 2 - 1, torch.rand(2, 1, 40, 48) * 2 - 1
    for layout in layouts:
        torch.manual_seed(0)
        reference = make(layout) if layout else make()
        full = tmp_path / "full.pth"
        torch.save(reference.state_dict(), full)
        loaded = load(full)
        assert loaded.layout == (layout or "vanilla")
        torch.testing.assert_close(loaded(x, y), reference(x, y))
        assert loaded(x, x).abs().max() < 1e-6
    broken = reference.state_dict()
    broken.pop("lin1.model.1.weight")
    torch.save(broken, full)
    with pytest.raises(CheckpointError, match="does not fit the LPIPS.*lin1"):
        load(full)
    # the vanilla trunk as torchvision saves it, plus the lpips package's heads file
    torch.save(_torchvision_layout(reference.net), tmp_path / "torchvision.pth")
    torch.save({k: v for k, v in reference.state_dict().items() if k.startswith("lin")}, tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match="without LPIPS heads"):
        load(tmp_path / "torchvision.pth")
    assembled = load(tmp_path / "torchvision.pth", tmp_path / "heads.pth")
    torch.testing.assert_close(assembled(x, y), reference(x, y))
    loss = build_loss(name="perceptual", backbone="squeeze" if make is LPIPSSqueeze else "vgg",
                      weights=str(tmp_path / "torchvision.pth"), heads=str(tmp_path / "heads.pth"))
    assert "LPIPS" in loss.perceptual.label and "torchvision.pth" in loss.perceptual.label


def test_lpips_alex_loads_its_files_strictly(tmp_path):
    torch.manual_seed(0)
    reference = LPIPSAlex("shift_tolerant")
    path = tmp_path / "alex_shift_tolerant.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_lpips_alex(path)
    x, y = torch.rand(2, 1, 40, 48) * 2 - 1, torch.rand(2, 1, 40, 48) * 2 - 1
    torch.testing.assert_close(loaded(x, y), reference(x, y))
    assert loaded(x, x).abs().max() < 1e-6

    broken = reference.state_dict()
    broken.pop("lin2.model.1.weight")
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match="does not fit the LPIPS AlexNet.*lin2"):
        load_lpips_alex(path)

    vanilla = LPIPSAlex("vanilla")
    trunk = {f"features.{k.split('.', 1)[1]}": v for k, v in vanilla.net.state_dict().items()}
    heads = {k: v for k, v in vanilla.state_dict().items() if k.startswith("lin")}
    torch.save(trunk, tmp_path / "alexnet-owt.pth")
    torch.save(heads, tmp_path / "alex.pth")
    with pytest.raises(CheckpointError, match="without LPIPS heads"):
        load_lpips_alex(tmp_path / "alexnet-owt.pth")
    assembled = load_lpips_alex(tmp_path / "alexnet-owt.pth", tmp_path / "alex.pth")
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(assembled(x, y), vanilla(x, y))


STLPIPS = os.environ.get("BRAINSYNTH_STLPIPS_WEIGHTS") or installed_stlpips_weights()


@pytest.mark.skipif(not STLPIPS, reason="set BRAINSYNTH_STLPIPS_WEIGHTS to stlpips-pytorch's alex_shift_tolerant.pth")
def test_the_real_shift_tolerant_weights_load_and_rank_distortions():
    loss = build_loss(name="perceptual", backbone="alex", weights=str(STLPIPS), pixel_factor=0.0)
    torch.manual_seed(0)
    target = torch.rand(1, 1, 32, 40, 36)
    small = loss(target + 0.02 * torch.randn_like(target), target).total
    large = loss(target + 0.2 * torch.randn_like(target), target).total
    assert 0 < small < large and not loss.is_random_backbone


STLPIPS_VGG = os.environ.get("BRAINSYNTH_STLPIPS_VGG_WEIGHTS") or installed_stlpips_vgg_weights()


@pytest.mark.skipif(
    not STLPIPS_VGG, reason="set BRAINSYNTH_STLPIPS_VGG_WEIGHTS to stlpips-pytorch's vgg_shift_tolerant.pth")
def test_the_real_shift_tolerant_vgg_weights_load_and_rank_distortions():
    loss = build_loss(name="perceptual", backbone="vgg", weights=str(STLPIPS_VGG), pixel_factor=0.0)
    torch.manual_seed(0)
    target = torch.rand(1, 1, 32, 40, 36)
    small = loss(target + 0.02 * torch.randn_like(target), target).total
    large = loss(target + 0.2 * torch.randn_like(target), target).total
    assert 0 < small < large and "VGG-16 (shift-tolerant)" in loss.perceptual.label


def test_medicalnet_backbone_loads_a_medicalnet_style_file(tmp_path):
    torch.manual_seed(0)
    net = ResNetFeatures("resnet10", pretrained=False, spatial_dims=3, in_channels=1)
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loss = build_loss(name="perceptual", backbone="medicalnet", depth=10, weights=str(path), pixel_factor=0.0)
    assert loss.perceptual.backbone.spatial_dims == 3 and "MedicalNet ResNet-10" in loss.describe()
    target = torch.rand(1, 1, 32, 32, 32)
    assert loss(target, target).total.item() < 1e-8
    assert loss(target.flip(2), target).total.item() > 0


def test_random_backbone_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first, second = RandomBackbone(), RandomBackbone()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_bad_loss_settings_are_recipe_errors():
    with pytest.raises(RecipeError, match="slice_fraction"):
        build_loss(name="jukebox_perceptual", backbone="random", slice_fraction=0.0)
    with pytest.raises(RecipeError, match="input_range"):
        build_loss(name="perceptual", backbone="random", input_range=(1.0, 0.0))
