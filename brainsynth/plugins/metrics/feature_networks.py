"""3D feature networks for distribution metrics (FID): MedicalNet from a local file, or a random net.

* MedicalNet (Chen et al. 2019, Tencent's ``resnet_<depth>_23dataset.pth`` or ``resnet_<depth>.pth``)
  is built as MONAI's ``ResNetFeatures`` and read with ``torch.load(weights_only=True)``; the
  depth is read from the file's layer keys unless given. Keys outside the trunk (the
  segmentation head ``conv_seg``) are ignored, as the original did; a trunk key the file lacks is
  an error. Features: the last stage, averaged over space (512-d for depths 10-34, 2048-d for 50+).
* Without weights, a small MONAI ResNet (one basic block per stage, 16-128 channels) initialised
  with seed 0 stands in. Random features still separate distributions, but their numbers are
  not FID and must never be compared with published ones; the metric reports them under another
  key (``fid_random_features``).

Volumes are z-scored one by one before the network, as MedicalNet was trained.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.library.weight_files import read_state_dict

MEDICALNET_FILE = "Tencent MedicalNet's resnet_<depth>_23dataset.pth (or resnet_<depth>.pth)"


class VolumeFeatures(nn.Module):
    """A frozen network mapping ``[N, 1, *spatial]`` volumes to ``[N, F]`` feature vectors."""

    def __init__(self, trunk: nn.Module, label: str, is_random: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.label = label
        self.is_random = is_random
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VolumeFeatures:
        return super().train(False)

    @torch.no_grad()
    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        volumes = volumes.float()
        dims = tuple(range(1, volumes.dim()))
        standardized = (volumes - volumes.mean(dim=dims, keepdim=True)) / (volumes.std(dim=dims, keepdim=True) + 1e-6)
        features = self.trunk(standardized)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        return features.flatten(2).mean(dim=2) if features.dim() > 2 else features

    def features(self, volumes: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
        """Features of many volumes, `batch_size` at a time (float64)."""
        return torch.cat([self(volumes[i : i + batch_size]) for i in range(0, len(volumes), batch_size)]).double()


def random_features() -> VolumeFeatures:
    """The fallback: a small seeded, untrained 3D ResNet. Its numbers are not FID."""
    from monai.networks.nets.resnet import ResNet  # MONAI: imported when built, not when plugins are listed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk = ResNet(
            block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=3,
            n_input_channels=1, conv1_t_stride=2, feed_forward=False,
        )
    label = "random untrained 3D ResNet (seed 0, 128-d); NOT FID: no MedicalNet weights were given"
    return VolumeFeatures(trunk, label, is_random=True)


def infer_medicalnet_depth(state: dict[str, torch.Tensor], path: Path) -> int:
    """The ResNet depth whose block layout matches the file's ``layer<i>.<j>.`` keys."""
    from monai.networks.nets.resnet import resnet_params  # MONAI: imported when built, not when plugins are listed

    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for key in state if (m := re.match(rf"layer{stage}\.(\d+)\.", key))}
        if not indices:
            raise CheckpointError(
                f"{path}: no 'layer{stage}.*' weights; this is not a MedicalNet ResNet. It needs {MEDICALNET_FILE}."
            )
        blocks.append(max(indices) + 1)
    bottleneck = any(key.startswith("layer1.0.conv3.") for key in state)
    for name, (block, layers, *_rest) in resnet_params.items():
        if layers == blocks and (block == "bottleneck") == bottleneck:
            return int(name.removeprefix("resnet"))
    raise CheckpointError(f"{path}: its ResNet layout ({blocks} blocks) matches no MedicalNet depth.")


def medicalnet_features(weights: str | Path, depth: int | None = None) -> VolumeFeatures:
    """MedicalNet's 3D ResNet trunk from a local `weights` file (never downloaded)."""
    from monai.networks.nets.resnet import ResNetFeatures, resnet_params  # MONAI: imported when built, not when plugins are listed

    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"fid: MedicalNet weights file {path} does not exist. It needs {MEDICALNET_FILE}: copy that file "
            f"to {path} or point 'weights:' at where it is (leave it unset for the labelled random-feature fallback)."
        )
    state = read_state_dict(path, "MedicalNet weights")
    if depth is None:
        depth = infer_medicalnet_depth(state, path)
    if f"resnet{depth}" not in resnet_params:
        depths = ", ".join(name.removeprefix("resnet") for name in resnet_params)
        raise RecipeError(f"fid: depth must be one of {depths}, got {depth}.")
    trunk = ResNetFeatures(f"resnet{depth}", pretrained=False, spatial_dims=3, in_channels=1)
    expected = trunk.state_dict()
    kept = {key: value for key, value in state.items() if key in expected}
    missing = [key for key in expected if key not in kept]
    if missing:
        raise CheckpointError(
            f"{path}: not a MedicalNet ResNet-{depth}; it lacks {len(missing)} of its weights "
            f"(first: {', '.join(missing[:3])}). It needs {MEDICALNET_FILE}."
        )
    try:
        trunk.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).splitlines()[:3])
        raise CheckpointError(f"{path}: does not fit MedicalNet ResNet-{depth}: {first}") from None
    return VolumeFeatures(trunk, f"MedicalNet ResNet-{depth} from {path}", is_random=False)
