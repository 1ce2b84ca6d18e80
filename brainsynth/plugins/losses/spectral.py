"""``spectral``: Fourier-magnitude (Jukebox) and optional phase terms plus pixel MSE.

The magnitude term is the original's "Jukebox" loss: ``mean((|F(x_hat)| - |F(x)|)^2)`` with the
orthonormal N-D FFT over channel and spatial axes (as MONAI's ``JukeboxLoss``, but through
``abs()``, whose gradient stays finite where a frequency component is exactly zero). The phase
term is ``mean(1 - cos(phase difference))`` = ``mean(|e^{i phi_hat} - e^{i phi}|^2) / 2``, the
intended form of the original ``spectral`` loss (Takaki et al. 2019); it is off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainsynth.core.tokenizer import LossOutput, ReconstructionLoss


def fourier(volume: torch.Tensor) -> torch.Tensor:
    """Orthonormal FFT over every axis but the batch axis, in fp32."""
    return torch.fft.fftn(volume.float(), dim=tuple(range(1, volume.dim())), norm="ortho")


def magnitude_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Jukebox spectral loss: MSE between Fourier magnitudes."""
    with torch.no_grad():
        target_magnitude = fourier(target).abs()
    return F.mse_loss(fourier(reconstruction).abs(), target_magnitude)


def phase_loss(reconstruction: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``mean(1 - cos(delta phase))``, computed without ``angle()`` so zero components are harmless."""
    spectrum = fourier(reconstruction)
    with torch.no_grad():
        target_spectrum = fourier(target)
        target_unit = target_spectrum / (target_spectrum.abs() + eps)
    cosine = (spectrum * target_unit.conj()).real / (spectrum.abs() + eps)
    return (1.0 - cosine).mean()


class SpectralLoss(ReconstructionLoss):
    """Fourier magnitude (Jukebox) + optional phase + pixel MSE, each with its own factor.

    Args:
        magnitude_factor: weight of the Fourier-magnitude MSE (the original ``fft_factor``).
        phase_factor: weight of the phase term (0: the original ``jukebox`` loss; 0.5 with
            ``magnitude_factor: 0.5`` gives the original ``spectral`` loss's intent).
        pixel_factor: weight of the voxel-wise MSE.
    """

    def __init__(self, magnitude_factor: float = 1.0, phase_factor: float = 0.0, pixel_factor: float = 1.0) -> None:
        super().__init__()
        self.magnitude_factor = magnitude_factor
        self.phase_factor = phase_factor
        self.pixel_factor = pixel_factor

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        components = {
            "spectral": magnitude_loss(reconstruction, target),
            "pixel_mse": F.mse_loss(reconstruction.float(), target.float()),
        }
        total = self.magnitude_factor * components["spectral"] + self.pixel_factor * components["pixel_mse"]
        if self.phase_factor:
            components["phase"] = phase_loss(reconstruction, target)
            total = total + self.phase_factor * components["phase"]
        return LossOutput(total, components)
