"""LPIPS with a VGG-16 trunk (Zhang et al. 2018), in plain torch, loading local weight files.

Two trunk layouts, told apart by the keys of the weights file (as for `lpips_alex`):

* ``shift_tolerant`` — ``vgg_shift_tolerant.pth`` from the ``stlpips-pytorch`` 0.0.2 wheel
  (Ghildyal & Liu 2022), trunk + linear heads: every 2x2 max-pool has stride 1 and is followed
  by [1, 2, 1] blur-pooling with stride 2;
* ``vanilla`` — the original LPIPS v0.1 VGG: one full LPIPS state dict (``net.slice*`` +
  ``lin*``), or torchvision's VGG-16 file (``features.*``) plus the lpips package's heads file
  (``vgg.pth``, the ``lin*`` layers) given as `heads`.

The five taps are relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError

from .lpips_alex import (
    BlurPool2d,
    LinearHead,
    ScalingLayer,
    installed_stlpips_file,
    load_full_lpips,
    load_torchvision_lpips,
    lpips_distance,
    read_state_dict,
)

VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
"""VGG-16 convolutions up to relu5_3 ("M": a max-pool)."""
TAP_CONVS = (2, 4, 7, 10, 13)
"""A tap after the ReLU of these convolutions (1-based)."""
CHANNELS = (64, 128, 256, 512, 512)
STLPIPS_VGG_FILE = "stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth"


class VGGTrunk(nn.Module):
    """VGG-16 features cut into the five LPIPS taps; layer indices run on across the slices as in
    torchvision's ``features`` (plus one blur-pool per max-pool in the shift-tolerant layout)."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        if layout not in ("shift_tolerant", "vanilla"):
            raise ValueError(f"unknown VGG layout {layout!r}")
        slices: list[OrderedDict] = [OrderedDict()]
        index, channels, convs = 0, 3, 0
        for item in VGG16_FEATURES:
            if item == "M":
                shift_tolerant = layout == "shift_tolerant"
                layers = [nn.MaxPool2d(2, 1), BlurPool2d(channels)] if shift_tolerant else [nn.MaxPool2d(2, 2)]
            else:
                layers = [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels, convs = item, convs + 1
            for layer in layers:
                slices[-1][str(index)] = layer
                index += 1
            if convs in TAP_CONVS and item != "M":
                slices.append(OrderedDict())
        for number, layers in enumerate(slices[:-1], start=1):
            self.add_module(f"slice{number}", nn.Sequential(layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for number in range(1, len(TAP_CONVS) + 1):
            x = getattr(self, f"slice{number}")(x)
            taps.append(x)
        return taps


class LPIPSVGG(nn.Module):
    """LPIPS-VGG distance of images in [-1, 1], one value per image; 1 or 3 channels."""

    spatial_dims = 2
    is_random = False

    def __init__(self, layout: str = "shift_tolerant") -> None:
        super().__init__()
        self.layout = layout
        self.scaling_layer = ScalingLayer()
        self.net = VGGTrunk(layout)
        for index, channels in enumerate(CHANNELS):
            self.add_module(f"lin{index}", LinearHead(channels))
        self.label = f"LPIPS VGG-16 ({layout.replace('_', '-')})"

    @property
    def heads(self) -> list[nn.Module]:
        return [getattr(self, f"lin{i}") for i in range(len(CHANNELS))]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {x.shape[1]} channels")
        return lpips_distance(self.net, self.heads, self.scaling_layer(x), self.scaling_layer(y))


def installed_stlpips_vgg_weights() -> Path | None:
    """``vgg_shift_tolerant.pth`` of an installed stlpips-pytorch wheel (found without importing it)."""
    return installed_stlpips_file(STLPIPS_VGG_FILE)


def load_lpips_vgg(weights: Path, heads: Path | None = None) -> LPIPSVGG:
    """LPIPS-VGG from local files; the trunk layout is read from the file's keys."""
    state = read_state_dict(weights, "LPIPS VGG weights")
    if "net.slice2.5.filt" in state:
        model = LPIPSVGG("shift_tolerant")
    elif "net.slice1.0.weight" in state:
        model = LPIPSVGG("vanilla")
    elif "features.0.weight" in state:
        return load_torchvision_lpips(LPIPSVGG("vanilla"), state, weights, heads, "vgg.pth", "VGG-16")
    else:
        raise CheckpointError(
            f"{weights}: not an LPIPS VGG file (no net.slice1.* or features.* keys). Use stlpips-pytorch's "
            f"vgg_shift_tolerant.pth or a full LPIPS VGG state dict."
        )
    return load_full_lpips(model, state, weights, f"LPIPS VGG-16 ({model.layout})")
