"""``non_saturating``: the non-saturating GAN criterion (Goodfellow et al. 2014). The original's
``hinge`` was this one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .criterion import AdversarialCriterion


class NonSaturating(AdversarialCriterion):
    """Non-saturating GAN: real ``softplus(-D)``, fake ``softplus(D)``, generator ``softplus(-D)``.

    This is binary cross-entropy on logits; the generator minimises ``-log sigmoid(D)``.
    """

    def real(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-logits)

    def fake(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(logits)
