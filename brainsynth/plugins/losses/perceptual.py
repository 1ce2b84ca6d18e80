"""``perceptual``: a perceptual distance (2.5D on volumes for 2D backbones) plus pixel MSE.

For a 2D backbone on a volume ``[B, C, X, Y, Z]`` (the original's "2.5D" LPIPS), each spatial
axis in turn is treated as a stack of slices: a random `slice_fraction` of the ``B * size``
slices along that axis is drawn (the same slices from reconstruction and target) and the mean
distance over them is that view's value. The perceptual term is the sum of the three views.
A 3D backbone (MedicalNet) sees whole volumes; a 2D backbone on 2D images sees whole images.

In a training step the slices are drawn over the global batch with a generator every rank shares
(`brainsynth.core.global_batch`), so N processes of batch B score the slices one process of batch
N x B would; outside one (a loss used on its own) they are drawn from torch's global RNG.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core import global_batch
from brainsynth.core.errors import RecipeError
from brainsynth.core.tokenizer import LossOutput, ReconstructionLoss

from .backbones import FrozenBackbone, build_backbone

Backbone = Literal["alex", "vgg", "squeeze", "medicalnet", "random"]


def random_slices(volume: torch.Tensor, axis: int, indices: torch.Tensor) -> torch.Tensor:
    """Slices ``indices`` (flat over batch x positions along spatial `axis`) as 2D images ``[k, C, a, b]``."""
    stack = torch.movedim(volume, 2 + axis, 1)  # [B, S, C, a, b]
    size = stack.shape[1]
    return stack[indices // size, indices % size]


class PerceptualTerm(nn.Module):
    """The perceptual part shared by ``perceptual`` and ``jukebox_perceptual``: one value per view."""

    def __init__(
        self,
        backbone: str,
        weights: str | None,
        heads: str | None,
        depth: int,
        slice_fraction: float,
        input_range: tuple[float, float],
    ) -> None:
        super().__init__()
        if not 0.0 < slice_fraction <= 1.0:
            raise RecipeError(f"perceptual loss: slice_fraction must be in (0, 1], got {slice_fraction}.")
        low, high = input_range
        if high <= low:
            raise RecipeError(f"perceptual loss: input_range must be (low, high) with low < high, got {list(input_range)}.")
        self.backbone: FrozenBackbone = build_backbone(backbone, weights, heads, depth)
        self.slice_fraction = slice_fraction
        self.input_range = (float(low), float(high))

    @property
    def is_random(self) -> bool:
        return self.backbone.is_random

    @property
    def label(self) -> str:
        return self.backbone.label

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.input_range
        return (x.float() - low) * (2.0 / (high - low)) - 1.0

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        spatial = reconstruction.dim() - 2
        x, y = self._scaled(reconstruction), self._scaled(target.detach())
        if self.backbone.spatial_dims == spatial:
            return [self.backbone(x, y).mean()]
        if self.backbone.spatial_dims == 3:
            raise RecipeError(f"perceptual loss: the 3D backbone ({self.label}) cannot score {spatial}D images.")
        step = global_batch.current()
        if step is not None:
            return self._global_views(x, y, step)
        views = []
        for axis in range(spatial):
            count = x.shape[0] * x.shape[2 + axis]
            keep = max(1, round(self.slice_fraction * count))
            indices = torch.randperm(count, device=x.device)[:keep]
            views.append(self.backbone(random_slices(x, axis, indices), random_slices(y, axis, indices)).mean())
        return views

    def _global_views(self, x: torch.Tensor, y: torch.Tensor, step: global_batch.Step) -> list[torch.Tensor]:
        """In a training step: the slices are drawn over the global batch with the step's shared
        generator, and each rank scores those of its own volumes. A view's value on a rank is
        ``world_size * (sum of its distances) / slices drawn``, so DDP's average over ranks (of
        gradients, as of values) is the mean over every drawn slice, as one process computes it."""
        generator = step.generator("perceptual_slices")
        views = []
        for axis in range(x.dim() - 2):
            layout = step.layout(x.shape[0], x.shape[2 + axis], x.device)
            keep = max(1, round(self.slice_fraction * layout.total))
            _, local = layout.mine(torch.randperm(layout.total, generator=generator)[:keep])
            if len(local) == 0:
                views.append(x.new_zeros(()))
                continue
            local = local.to(x.device)
            distances = self.backbone(random_slices(x, axis, local), random_slices(y, axis, local))
            views.append(distances.reshape(len(local), -1).mean(dim=1).sum() * (step.world_size / keep))
        return views


class PerceptualLoss(ReconstructionLoss):
    """Perceptual distance (2.5D LPIPS-Alex by default) + pixel MSE.

    Args:
        perceptual_factor: weight of each view's mean distance (0.001 in the original).
        pixel_factor: weight of the voxel-wise MSE.
        backbone: ``alex``, ``vgg`` or ``squeeze`` (LPIPS), ``medicalnet`` (3D ResNet) or ``random`` (tests/demos).
        weights: local weights file of the backbone (never downloaded).
        heads: LPIPS heads file when `weights` is a torchvision trunk (AlexNet, VGG-16, SqueezeNet).
        depth: MedicalNet ResNet depth (10, 18, 34, 50, 101, 152, 200).
        slice_fraction: fraction of slices scored per axis in 2.5D (0.5 in the original).
        input_range: intensity range of the images, mapped to [-1, 1] for the backbone.
    """

    def __init__(
        self,
        perceptual_factor: float = 0.001,
        pixel_factor: float = 1.0,
        backbone: Backbone = "alex",
        weights: str | None = None,
        heads: str | None = None,
        depth: int = 10,
        slice_fraction: float = 0.5,
        input_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.perceptual = PerceptualTerm(backbone, weights, heads, depth, slice_fraction, input_range)
        self.perceptual_factor = perceptual_factor
        self.pixel_factor = pixel_factor

    @property
    def is_random_backbone(self) -> bool:
        return self.perceptual.is_random

    def describe(self) -> str:
        return f"perceptual loss with {self.perceptual.label}"

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        views = self.perceptual(reconstruction, target)
        components = {f"perceptual_{i}": value for i, value in enumerate(views)}
        components["pixel_mse"] = F.mse_loss(reconstruction.float(), target.float())
        total = self.perceptual_factor * sum(views) + self.pixel_factor * components["pixel_mse"]
        return LossOutput(total, components)
