"""LPIPS with a SqueezeNet 1.1 trunk (Zhang et al. 2018), in plain torch, from local files.

No wheel ships these weights complete: the trunk is torchvision's SqueezeNet 1.1 file
(``squeezenet1_1-b8a52dc0.pth``, ``features.*`` keys) and the calibration heads are the lpips
package's ``weights/v0.1/squeeze.pth`` (``lin0``..``lin6``); a single full LPIPS state dict
(``net.slice*`` + ``lin*``) is read too. The seven taps follow the lpips package's cut of
``features``: [0, 1], [2-4], [5-7], [8, 9], [10], [11], [12].
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError

from .lpips_alex import LPIPSNetwork, TapTrunk, load_full_lpips, load_torchvision_lpips
from .weight_files import read_state_dict

CHANNELS = (64, 128, 256, 384, 384, 512, 512)
FIRE = {3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128),
        9: (256, 48, 192), 10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)}
"""features index -> (input channels, squeeze channels, channels of each expand branch)."""
SLICES = ((0, 1), (2, 3, 4), (5, 6, 7), (8, 9), (10,), (11,), (12,))


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expands side by side."""

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], dim=1)


def _layer(index: int) -> nn.Module:
    if index == 0:
        return nn.Conv2d(3, 64, 3, stride=2)
    if index == 1:
        return nn.ReLU(inplace=True)
    if index in FIRE:
        return Fire(*FIRE[index])
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class SqueezeTrunk(TapTrunk):
    """SqueezeNet 1.1 features cut into the seven LPIPS taps (torchvision's layer indices)."""

    def __init__(self) -> None:
        super().__init__()
        for number, indices in enumerate(SLICES, start=1):
            self.add_module(f"slice{number}", nn.Sequential(OrderedDict((str(i), _layer(i)) for i in indices)))


class LPIPSSqueeze(LPIPSNetwork):
    """LPIPS with the SqueezeNet 1.1 trunk."""

    def __init__(self) -> None:
        super().__init__(SqueezeTrunk(), CHANNELS, "LPIPS SqueezeNet 1.1")


def load_lpips_squeeze(weights: Path, heads: Path | None = None) -> LPIPSSqueeze:
    """LPIPS-SqueezeNet from a full LPIPS state dict, or torchvision's trunk file plus `heads`."""
    state = read_state_dict(weights, "LPIPS SqueezeNet weights")
    if "net.slice1.0.weight" in state:
        return load_full_lpips(LPIPSSqueeze(), state, weights, "LPIPS SqueezeNet 1.1")
    if "features.0.weight" in state:
        return load_torchvision_lpips(LPIPSSqueeze(), state, weights, heads, "squeeze.pth", "SqueezeNet 1.1")
    raise CheckpointError(
        f"{weights}: not a SqueezeNet 1.1 file (no features.* or net.slice1.* keys). Use torchvision's "
        f"squeezenet1_1-b8a52dc0.pth with 'heads:' set to the lpips package's weights/v0.1/squeeze.pth."
    )
