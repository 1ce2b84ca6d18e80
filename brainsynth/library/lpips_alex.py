"""LPIPS with an AlexNet trunk (Zhang et al. 2018), in plain torch, loading local weight files.

Two trunk layouts are understood, told apart by the keys of the weights file:

* ``shift_tolerant`` — the ``alex_shift_tolerant.pth`` file that ships complete (trunk + linear
  heads) in the ``stlpips-pytorch`` 0.0.2 wheel (Ghildyal & Liu 2022): stride-1 first conv and
  [1, 2, 1] blur-pooling before every down-sampling;
* ``vanilla`` — the original LPIPS v0.1 AlexNet: either one full LPIPS state dict
  (``net.slice*`` + ``lin*`` + ``scaling_layer.*``), or torchvision's AlexNet file
  (``features.*``) plus the lpips package's 6 KB heads file (``lin*``) given as `heads`.

Weights are only ever read from local files (``torch.load(weights_only=True)``); nothing is
downloaded. The installed ``stlpips-pytorch`` distribution, if any, is found through its
metadata without importing its code.
"""

from __future__ import annotations

import importlib.metadata
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import CheckpointError

from .weight_files import load_strict, read_state_dict

CHANNELS = (64, 192, 384, 256, 256)
STLPIPS_FILE = "stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth"


class BlurPool2d(nn.Module):
    """Anti-aliased down-sampling: reflect-pad by 2, then a fixed [1,2,1] x [1,2,1] / 16 filter, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _slice(layers: dict[int, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((str(index), layer) for index, layer in layers.items()))


class TapTrunk(nn.Module):
    """A trunk whose child modules are its slices, in order; it returns each slice's output (a tap)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for stage in self.children():
            x = stage(x)
            taps.append(x)
        return taps


class AlexTrunk(TapTrunk):
    """AlexNet features cut into the five LPIPS taps (after each ReLU)."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        if layout == "shift_tolerant":
            self.slice1 = _slice({0: nn.Conv2d(3, 64, 11, stride=1, padding=2), 1: BlurPool2d(64), 2: relu()})
            self.slice2 = _slice({3: nn.MaxPool2d(3, 1), 4: BlurPool2d(64), 5: nn.Conv2d(64, 192, 5, padding=2), 6: relu()})
            self.slice3 = _slice({7: nn.MaxPool2d(3, 1), 8: BlurPool2d(192), 9: nn.Conv2d(192, 384, 3, padding=1), 10: relu()})
            self.slice4 = _slice({11: nn.Conv2d(384, 256, 3, padding=1), 12: relu()})
            self.slice5 = _slice({13: nn.Conv2d(256, 256, 3, padding=1), 14: relu()})
        elif layout == "vanilla":
            self.slice1 = _slice({0: nn.Conv2d(3, 64, 11, stride=4, padding=2), 1: relu()})
            self.slice2 = _slice({2: nn.MaxPool2d(3, 2), 3: nn.Conv2d(64, 192, 5, padding=2), 4: relu()})
            self.slice3 = _slice({5: nn.MaxPool2d(3, 2), 6: nn.Conv2d(192, 384, 3, padding=1), 7: relu()})
            self.slice4 = _slice({8: nn.Conv2d(384, 256, 3, padding=1), 9: relu()})
            self.slice5 = _slice({10: nn.Conv2d(256, 256, 3, padding=1), 11: relu()})
        else:
            raise ValueError(f"unknown AlexNet layout {layout!r}")


class LinearHead(nn.Module):
    """LPIPS calibration: a non-negative 1x1 conv per tap. The trained LPIPS has a dropout at
    index 0, inactive at evaluation; here it is an identity so the weights keep their names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each spatial feature vector divided by its Euclidean norm (LPIPS's channel normalisation)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_distance(trunk: nn.Module, heads: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS between `x` and `y` (already scaled): sum over taps of the spatial mean of
    the head-weighted squared difference of unit-normalised features. The `y` branch runs without
    autograd (it is the target)."""
    features_x = trunk(x)
    with torch.no_grad():
        features_y = trunk(y)
    total = x.new_zeros(x.shape[0])
    for head, fx, fy in zip(heads, features_x, features_y):
        difference = (unit_normalize(fx) - unit_normalize(fy)).pow(2)
        total = total + head(difference).mean(dim=(1, 2, 3))
    return total


class ScalingLayer(nn.Module):
    """LPIPS v0.1 input scaling: ``(x - shift) / scale`` per RGB channel (broadcasts 1 channel to 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LPIPSNetwork(nn.Module):
    """LPIPS distance of images in [-1, 1], one value per image; 1 or 3 channels.

    A trunk (`TapTrunk`) and one `LinearHead` per tap, named ``net`` and ``lin<i>`` as in the
    lpips package, so its state dicts load as they are.
    """

    spatial_dims = 2
    is_random = False

    def __init__(self, trunk: TapTrunk, channels: tuple[int, ...], label: str, layout: str = "vanilla") -> None:
        super().__init__()
        self.layout = layout
        self.scaling_layer = ScalingLayer()
        self.net = trunk
        for index, width in enumerate(channels):
            self.add_module(f"lin{index}", LinearHead(width))
        self.label = label
        self.taps = len(channels)

    @property
    def heads(self) -> list[nn.Module]:
        return [getattr(self, f"lin{i}") for i in range(self.taps)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {x.shape[1]} channels")
        return lpips_distance(self.net, self.heads, self.scaling_layer(x), self.scaling_layer(y))


class LPIPSAlex(LPIPSNetwork):
    """LPIPS with the AlexNet trunk, `layout` ``shift_tolerant`` or ``vanilla``."""

    def __init__(self, layout: str = "shift_tolerant") -> None:
        super().__init__(AlexTrunk(layout), CHANNELS, f"LPIPS AlexNet ({layout.replace('_', '-')})", layout)


def installed_stlpips_file(relative: str) -> Path | None:
    """A file of an installed stlpips-pytorch wheel, found through its metadata (never imported)."""
    try:
        distribution = importlib.metadata.distribution("stlpips-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(relative)))
    return path if path.is_file() else None


def installed_stlpips_weights() -> Path | None:
    """``alex_shift_tolerant.pth`` of an installed stlpips-pytorch wheel."""
    return installed_stlpips_file(STLPIPS_FILE)


def load_full_lpips(model: nn.Module, state: dict[str, torch.Tensor], weights: Path, what: str) -> nn.Module:
    """Load one full LPIPS state dict (``net.*`` + ``lin*``; the fixed scaling layer may be absent)."""
    state.setdefault("scaling_layer.shift", model.scaling_layer.shift)
    state.setdefault("scaling_layer.scale", model.scaling_layer.scale)
    load_strict(model, state, weights, what)
    return model


def load_torchvision_lpips(
    model: nn.Module, state: dict[str, torch.Tensor], weights: Path, heads: Path | None, heads_file: str, what: str
) -> nn.Module:
    """Load torchvision's ``features.<i>.*`` trunk into the model's slices, and the heads from `heads`.

    The trunk's slices keep torchvision's layer indices as child names, so ``features.<i>.<p>``
    goes to ``<slice holding i>.<i>.<p>``. The heads file is the lpips package's ``v0.1/<heads_file>``.
    """
    if heads is None:
        raise CheckpointError(
            f"{weights} is a torchvision {what} (features.* keys) without LPIPS heads. Also set "
            f"'heads:' to the lpips package's weights/v0.1/{heads_file} (the lin* layers)."
        )
    slice_of = {index: name for name, stage in model.net.named_children() for index, _ in stage.named_children()}
    trunk = {}
    for key, value in state.items():
        _, index, param = key.split(".", 2) if key.startswith("features.") else ("", "", "")
        if index in slice_of:
            trunk[f"{slice_of[index]}.{index}.{param}"] = value
    load_strict(model.net, trunk, weights, f"{what} trunk")
    head_state = read_state_dict(heads, "LPIPS heads")
    for index, head in enumerate(model.heads):
        key = f"lin{index}.model.1.weight"
        if key not in head_state:
            raise CheckpointError(f"{heads}: no '{key}'; expected the lpips package's v0.1 {heads_file}.")
        load_strict(head, {"model.1.weight": head_state[key]}, heads, "LPIPS heads")
    return model


def load_lpips_alex(weights: Path, heads: Path | None = None) -> LPIPSAlex:
    """LPIPS-Alex from local files; the trunk layout is read from the file's keys."""
    state = read_state_dict(weights, "LPIPS AlexNet weights")
    if "net.slice1.1.filt" in state:
        model = LPIPSAlex("shift_tolerant")
    elif "net.slice1.0.weight" in state:
        model = LPIPSAlex("vanilla")
    elif "features.0.weight" in state:
        return load_torchvision_lpips(LPIPSAlex("vanilla"), state, weights, heads, "alex.pth", "AlexNet")
    else:
        raise CheckpointError(
            f"{weights}: not an LPIPS AlexNet file (no net.slice1.* or features.* keys). Use stlpips-pytorch's "
            f"alex_shift_tolerant.pth or a full LPIPS AlexNet state dict."
        )
    return load_full_lpips(model, state, weights, f"LPIPS AlexNet ({model.layout})")
