"""``sgd``: torch's SGD with optional momentum."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from brainsynth.core.schema import NonNegativeFloat, PositiveFloat


def sgd(
    parameters: Iterable[torch.nn.Parameter],
    lr: PositiveFloat = 1.0e-4,
    momentum: NonNegativeFloat = 0.0,
    weight_decay: NonNegativeFloat = 0.0,
) -> torch.optim.SGD:
    """Stochastic gradient descent, with momentum when it is above 0."""
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
