"""Perceptual backbones: networks that measure a distance between a reconstruction and its target.

Every backbone is a frozen module ``backbone(x, y) -> [N]`` (one distance per image or volume)
with a `label` for the run log, `is_random` (True only for the untrained test backbone) and
`spatial_dims` (2: applied to slices, 2.5D, on volumes; 3: applied to whole volumes).

* ``alex`` — LPIPS AlexNet (see `brainsynth.library.lpips_alex`), from `weights` (and `heads` for a torchvision
  trunk). Without `weights`, an installed ``stlpips-pytorch`` wheel's file is used if present.
* ``vgg`` — LPIPS VGG-16 (see `brainsynth.library.lpips_vgg`), the same way (``vgg_shift_tolerant.pth``).
* ``squeeze`` — LPIPS SqueezeNet 1.1 (see `brainsynth.library.lpips_squeeze`): no wheel ships it, so `weights`
  (torchvision's trunk) and `heads` (the lpips package's heads) are both required.
* ``medicalnet`` — MONAI's 3D ResNet with MedicalNet weights (Chen et al. 2019) from `weights`
  (Tencent's ``resnet_<depth>_23dataset.pth``); LPIPS-style distance over its five stages.
* ``random`` — a small untrained convolutional net with a fixed seed, for tests and demos. It is
  no perceptual loss, and says so in its label.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.library.lpips_alex import BlurPool2d, installed_stlpips_weights, load_lpips_alex, unit_normalize
from brainsynth.library.lpips_squeeze import load_lpips_squeeze
from brainsynth.library.lpips_vgg import installed_stlpips_vgg_weights, load_lpips_vgg
from brainsynth.library.weight_files import load_strict, read_state_dict

BACKBONES = ("alex", "vgg", "squeeze", "medicalnet", "random")
MEDICALNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)


class FrozenBackbone(nn.Module):
    """No gradients into the backbone's own weights, and always in eval mode."""

    label: str = ""
    is_random: bool = False
    spatial_dims: int = 2

    def freeze(self) -> FrozenBackbone:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        return super().train(False)


class LPIPSBackbone(FrozenBackbone):
    """An LPIPS network (AlexNet, VGG-16 or SqueezeNet trunk) on images scaled to [-1, 1]."""

    def __init__(self, lpips: nn.Module, weights: Path) -> None:
        super().__init__()
        self.lpips = lpips
        self.label = f"{self.lpips.label} from {weights}"
        self.freeze()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y)


class RandomBackbone(FrozenBackbone):
    """Three random conv layers (seed 0) with blur-pooling and uniform heads: tests and demos only."""

    is_random = True
    label = "random untrained backbone (tests and demos only; NOT a perceptual loss)"

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU()),
            nn.Sequential(BlurPool2d(16), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()),
            nn.Sequential(BlurPool2d(32), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
        ])
        torch.random.set_rng_state(generator_state)
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for stage in self.stages:
            if x.shape[-1] < 4 or x.shape[-2] < 4:
                break
            x = stage(x)
            taps.append(x)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features_x = self.features(x)
        with torch.no_grad():
            features_y = self.features(y)
        total = x.new_zeros(x.shape[0])
        for fx, fy in zip(features_x, features_y):
            total = total + (unit_normalize(fx) - unit_normalize(fy)).pow(2).mean(dim=(1, 2, 3))
        return total


class MedicalNetBackbone(FrozenBackbone):
    """MedicalNet 3D ResNet features of z-scored volumes; LPIPS-style distance without heads."""

    spatial_dims = 3

    def __init__(self, weights: Path, depth: int) -> None:
        super().__init__()
        from monai.networks.nets.resnet import ResNetFeatures  # MONAI: imported when built, not when plugins are listed

        self.net = ResNetFeatures(f"resnet{depth}", pretrained=False, spatial_dims=3, in_channels=1)
        state = read_state_dict(weights, f"MedicalNet ResNet-{depth} weights")
        load_strict(self.net, state, weights, f"MONAI ResNet-{depth} (MedicalNet layout)")
        self.label = f"MedicalNet ResNet-{depth} from {weights}"
        self.freeze()

    @staticmethod
    def _standardize(volume: torch.Tensor) -> torch.Tensor:
        mean = volume.mean(dim=tuple(range(1, volume.dim())), keepdim=True)
        std = volume.std(dim=tuple(range(1, volume.dim())), keepdim=True)
        return (volume - mean) / (std + 1e-6)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"MedicalNet takes 1-channel volumes, got {x.shape[1]} channels")
        features_x = self.net(self._standardize(x))
        with torch.no_grad():
            features_y = self.net(self._standardize(y))
        total = x.new_zeros(x.shape[0])
        for fx, fy in zip(features_x, features_y):
            total = total + (unit_normalize(fx) - unit_normalize(fy)).pow(2).sum(dim=1).mean(dim=(1, 2, 3))
        return total


def _weights_file(backbone: str, weights: str | None, wanted: str) -> Path:
    if weights is None:
        raise RecipeError(
            f"perceptual backbone '{backbone}' needs a local weights file and none is set. It needs {wanted}: "
            f"copy that file to this machine and set 'weights: /path/to/file' in the loss block. brainsynth "
            f"never downloads weights; for tests and demos use 'backbone: random' instead."
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"perceptual backbone '{backbone}': weights file {path} does not exist. It needs {wanted}: "
            f"copy that file to {path} or point 'weights:' at where it is."
        )
    return path


ALEX_WEIGHTS = (
    "LPIPS AlexNet weights: alex_shift_tolerant.pth from the stlpips-pytorch 0.0.2 wheel "
    "(stlpips_pytorch/weights/vST0.0/), or a full LPIPS AlexNet state dict"
)
VGG_WEIGHTS = (
    "LPIPS VGG-16 weights: vgg_shift_tolerant.pth from the stlpips-pytorch 0.0.2 wheel "
    "(stlpips_pytorch/weights/vST0.0/), or a full LPIPS VGG state dict"
)
SQUEEZE_WEIGHTS = (
    "torchvision's SqueezeNet 1.1 weights squeezenet1_1-b8a52dc0.pth, plus 'heads:' set to the lpips "
    "package's weights/v0.1/squeeze.pth (no wheel ships SqueezeNet LPIPS weights complete)"
)
LPIPS_LOADERS = {"alex": (load_lpips_alex, installed_stlpips_weights, ALEX_WEIGHTS, "alex.pth"),
                 "vgg": (load_lpips_vgg, installed_stlpips_vgg_weights, VGG_WEIGHTS, "vgg.pth"),
                 "squeeze": (load_lpips_squeeze, lambda: None, SQUEEZE_WEIGHTS, "squeeze.pth")}


def build_backbone(
    backbone: str, weights: str | None = None, heads: str | None = None, depth: int = 10, in_channels: int = 1
) -> FrozenBackbone:
    """The perceptual backbone `backbone`, with its weights read from local files only."""
    if backbone == "random":
        return RandomBackbone(in_channels)
    if backbone in LPIPS_LOADERS:
        load, installed, wanted, heads_file = LPIPS_LOADERS[backbone]
        if weights is None and installed() is not None:
            return LPIPSBackbone(load(installed(), None), installed())
        path = _weights_file(backbone, weights, wanted)
        head_path = None
        if heads is not None:
            head_path = _weights_file(backbone, heads, f"the lpips package's weights/v0.1/{heads_file}")
        return LPIPSBackbone(load(path, head_path), path)
    if backbone == "medicalnet":
        if depth not in MEDICALNET_DEPTHS:
            raise RecipeError(f"perceptual backbone 'medicalnet': depth must be one of {MEDICALNET_DEPTHS}, got {depth}.")
        return MedicalNetBackbone(
            _weights_file("medicalnet", weights, f"Tencent MedicalNet's resnet_{depth}_23dataset.pth (or resnet_{depth}.pth)"),
            depth,
        )
    raise RecipeError(f"unknown perceptual backbone '{backbone}'. Available: {', '.join(BACKBONES)}.")
