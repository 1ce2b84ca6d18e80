"""What every adversarial criterion shares: the loss weight, its warm-up and the adaptive weight.

A criterion turns discriminator logits into losses: `generator_loss` (the generator wants its
reconstructions judged real), `discriminator_loss` (half real + half fake, as the original) and
`realism_map` (element-wise generator loss, the per-patch map ``extract`` can save). The losses
are returned unweighted; `weight_at` gives the scheduled weight the trainer multiplies by.
"""

from __future__ import annotations

import torch

from brainsynth.core.errors import RecipeError

from .weighting import warmup_factor


class AdversarialCriterion:
    """Base class of ``adversarial_loss`` components.

    Args:
        weight: weight of the adversarial terms (0.005 in the paper, for G and D).
        warmup_start_epoch: epoch (0-based, fractional allowed) at which the weight starts to rise.
        warmup_epochs: length of the linear rise from 0 to `weight`; 0 means no warm-up (the
            original applied none).
        adaptive_weight: multiply the generator term by the VQGAN adaptive weight
            ``|grad L_rec| / (|grad L_adv| + 1e-4)`` at the decoder's last layer.
        adaptive_start_epoch: before this epoch, `adaptive_value_before` replaces the adaptive weight.
        adaptive_value_before: the fixed value used before `adaptive_start_epoch`.
    """

    def __init__(
        self,
        weight: float = 0.005,
        warmup_start_epoch: float = 0.0,
        warmup_epochs: float = 0.0,
        adaptive_weight: bool = False,
        adaptive_start_epoch: int = 0,
        adaptive_value_before: float = 1.0,
    ) -> None:
        if weight < 0 or warmup_epochs < 0 or warmup_start_epoch < 0:
            raise RecipeError(
                f"adversarial loss: weight, warmup_start_epoch and warmup_epochs must be >= 0; "
                f"got {weight}, {warmup_start_epoch}, {warmup_epochs}."
            )
        self.weight = weight
        self.warmup_start_epoch = warmup_start_epoch
        self.warmup_epochs = warmup_epochs
        self.adaptive_weight = adaptive_weight
        self.adaptive_start_epoch = adaptive_start_epoch
        self.adaptive_value_before = adaptive_value_before

    # -- element-wise criteria, implemented by each component ---------------------------------
    def real(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise loss for logits that should be judged real (discriminator side)."""
        raise NotImplementedError

    def fake(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise loss for logits that should be judged fake (discriminator side)."""
        raise NotImplementedError

    def generator(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise generator loss on the logits of its reconstructions."""
        return self.real(logits)

    # -- shared ------------------------------------------------------------------------------
    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return self.generator(fake_logits.float()).mean()

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.real(real_logits.float()).mean() + self.fake(fake_logits.float()).mean())

    def realism_map(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-patch generator loss (low = judged real), same shape as the logits."""
        return self.generator(logits.float())

    def weight_at(self, epoch: float) -> float:
        """The adversarial weight at `epoch` (0-based; fractions for mid-epoch steps)."""
        return self.weight * warmup_factor(epoch, self.warmup_start_epoch, self.warmup_epochs)

    def uses_adaptive_weight(self, epoch: float) -> bool:
        """True when the adaptive weight (rather than `adaptive_value_before`) applies at `epoch`."""
        return self.adaptive_weight and epoch >= self.adaptive_start_epoch
