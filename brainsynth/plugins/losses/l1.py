"""``l1``: voxel-wise mean absolute error."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainsynth.core.tokenizer import LossOutput, ReconstructionLoss


class L1Loss(ReconstructionLoss):
    """Mean absolute error between reconstruction and target (fp32 under autocast)."""

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        value = F.l1_loss(reconstruction.float(), target.float())
        return LossOutput(value, {"pixel_l1": value})
