"""``least_square``: the LSGAN criterion (Mao et al. 2017), used by the paper."""

from __future__ import annotations

import torch

from .criterion import AdversarialCriterion


class LeastSquare(AdversarialCriterion):
    """Least squares: real ``(D - 1)^2``, fake ``D^2``; the generator wants ``(D - 1)^2``."""

    def real(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits - 1.0).pow(2)

    def fake(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.pow(2)
