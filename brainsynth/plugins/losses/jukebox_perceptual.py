"""``jukebox_perceptual``: the paper's reconstruction loss (reference §3.2).

``spectral_factor * MSE(|F(x_hat)|, |F(x)|) + perceptual_factor * sum over the three axes of the
mean LPIPS on a random fraction of slices + pixel_factor * MSE(x_hat, x)``; the engine adds the
codebook's commitment loss. Defaults are the paper's: 1, 0.001 per view, 1, half the slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainsynth.core.tokenizer import LossOutput, ReconstructionLoss

from .perceptual import Backbone, PerceptualTerm
from .spectral import magnitude_loss


class JukeboxPerceptualLoss(ReconstructionLoss):
    """Fourier-magnitude MSE + 2.5D perceptual + pixel MSE, every factor configurable.

    Args:
        spectral_factor: weight of the Fourier-magnitude MSE (the original ``fft_factor``).
        perceptual_factor: weight of each view's mean perceptual distance.
        pixel_factor: weight of the voxel-wise MSE.
        backbone: ``alex``, ``vgg`` or ``squeeze`` (LPIPS), ``medicalnet`` (3D ResNet) or ``random`` (tests/demos).
        weights: local weights file of the backbone (never downloaded).
        heads: LPIPS heads file when `weights` is a torchvision trunk (AlexNet, VGG-16, SqueezeNet).
        depth: MedicalNet ResNet depth.
        slice_fraction: fraction of slices scored per axis in 2.5D.
        input_range: intensity range of the images, mapped to [-1, 1] for the backbone.
    """

    def __init__(
        self,
        spectral_factor: float = 1.0,
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
        self.spectral_factor = spectral_factor
        self.perceptual_factor = perceptual_factor
        self.pixel_factor = pixel_factor
        self.perceptual = PerceptualTerm(backbone, weights, heads, depth, slice_fraction, input_range)

    @property
    def is_random_backbone(self) -> bool:
        return self.perceptual.is_random

    def describe(self) -> str:
        return f"jukebox_perceptual with {self.perceptual.label}"

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        components = {"spectral": magnitude_loss(reconstruction, target)}
        total = self.spectral_factor * components["spectral"]
        if self.perceptual_factor:
            views = self.perceptual(reconstruction, target)
            components.update({f"perceptual_{i}": value for i, value in enumerate(views)})
            total = total + self.perceptual_factor * sum(views)
        components["pixel_mse"] = F.mse_loss(reconstruction.float(), target.float())
        total = total + self.pixel_factor * components["pixel_mse"]
        return LossOutput(total, components)
