"""``mse``: voxel-wise mean squared error."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainsynth.core.tokenizer import LossOutput, ReconstructionLoss


class MSELoss(ReconstructionLoss):
    """Mean squared error between reconstruction and target (fp32 under autocast)."""

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        value = F.mse_loss(reconstruction.float(), target.float())
        return LossOutput(value, {"pixel_mse": value})
