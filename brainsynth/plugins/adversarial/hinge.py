"""``hinge``: the hinge criterion (Lim & Ye 2017; VQGAN). The original's ``vanilla`` was this one."""

from __future__ import annotations

import torch

from .criterion import AdversarialCriterion


class Hinge(AdversarialCriterion):
    """Hinge: real ``relu(1 - D)``, fake ``relu(1 + D)``; the generator minimises ``-D``."""

    def real(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.relu(1.0 - logits)

    def fake(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.relu(1.0 + logits)

    def generator(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits
