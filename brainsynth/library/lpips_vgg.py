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

from torch import nn

from brainsynth.core.errors import CheckpointError

from .lpips_alex import (
    BlurPool2d,
    LPIPSNetwork,
    TapTrunk,
    installed_stlpips_file,
    load_full_lpips,
    load_torchvision_lpips,
)
from .weight_files import read_state_dict

VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
"""VGG-16 convolutions up to relu5_3 ("M": a max-pool)."""
TAP_CONVS = (2, 4, 7, 10, 13)
"""A tap after the ReLU of these convolutions (1-based)."""
CHANNELS = (64, 128, 256, 512, 512)
STLPIPS_VGG_FILE = "stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth"


class VGGTrunk(TapTrunk):
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


class LPIPSVGG(LPIPSNetwork):
    """LPIPS with the VGG-16 trunk, `layout` ``shift_tolerant`` or ``vanilla``."""

    def __init__(self, layout: str = "shift_tolerant") -> None:
        super().__init__(VGGTrunk(layout), CHANNELS, f"LPIPS VGG-16 ({layout.replace('_', '-')})", layout)


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
