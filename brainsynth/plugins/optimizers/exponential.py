"""``exponential``: the original's per-iteration exponential decay.

The original's ``gamma: auto`` picks the rate that reaches 1e-5 at the end of training; here that
is ``final_lr`` (the default when neither is given). ``warmup_steps`` ramps the rate up linearly
over the first steps (the decay runs underneath): a VQ-VAE's codebook can collapse in its first
steps at a learning rate it trains well at once the encoder has settled.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from brainsynth.core.schema import NonNegativeInt, PositiveFloat, Range
from brainsynth.library.linear_warmup import warmup_factor


class Exponential(torch.optim.lr_scheduler.ExponentialLR):
    """Multiply the learning rate by gamma every iteration (gamma from final_lr when not given)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        gamma: Annotated[float, Range(gt=0, le=1)] | None = None,
        final_lr: PositiveFloat | None = None,
        warmup_steps: NonNegativeInt = 0,
    ) -> None:
        self.warmup_steps = int(warmup_steps)
        if gamma is None:
            lr = optimizer.param_groups[0]["lr"]
            target = final_lr if final_lr is not None else 1.0e-5
            gamma = math.exp(math.log(target / lr) / max(total_steps, 1))
        super().__init__(optimizer, gamma=gamma)

    def get_lr(self) -> list[float]:
        """Without warm-up, torch's chained decay (bit for bit the original's); with it, the closed form."""
        if not self.warmup_steps:
            return super().get_lr()
        ramp = warmup_factor(self.last_epoch + 1, length=self.warmup_steps)
        return [base * self.gamma**self.last_epoch * ramp for base in self.base_lrs]

    @staticmethod
    def check_values(values: dict) -> str | None:
        if values["gamma"] is not None and values["final_lr"] is not None:
            return "give either gamma or final_lr, not both (final_lr picks the gamma that ends there)."
        return None
