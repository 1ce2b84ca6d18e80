"""What every adversarial criterion shares.

A criterion turns discriminator logits into losses: `generator_loss` (the generator wants its
reconstructions judged real), `discriminator_loss` (half real + half fake, as the original) and
`realism_map` (the element-wise generator loss: the per-patch map ``extract`` can save). Losses
are unweighted: the adversarial weight, its warm-up and the adaptive weight belong to the
training loop (see `brainsynth.library.adversarial_weighting`). Logits are cast to fp32 first (safe under autocast).
"""

from __future__ import annotations

import torch


class AdversarialCriterion:
    """Base class of ``adversarial_loss`` components: subclasses define `real` and `fake`."""

    def real(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise loss for logits that should be judged real (discriminator side)."""
        raise NotImplementedError

    def fake(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise loss for logits that should be judged fake (discriminator side)."""
        raise NotImplementedError

    def generator(self, logits: torch.Tensor) -> torch.Tensor:
        """Element-wise generator loss on the logits of its reconstructions (default: `real`)."""
        return self.real(logits)

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return self.generator(fake_logits.float()).mean()

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.real(real_logits.float()).mean() + self.fake(fake_logits.float()).mean())

    def realism_map(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-patch generator loss (low = judged real), same shape as the logits."""
        return self.generator(logits.float())
