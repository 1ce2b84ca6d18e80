"""``adam``: torch's Adam (the original's optimizer for both stages)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import torch

from brainsynth.core.schema import NonNegativeFloat, PositiveFloat, Range

Beta = Annotated[float, Range(ge=0, lt=1)]


def adam(
    parameters: Iterable[torch.nn.Parameter],
    lr: PositiveFloat = 1.0e-4,
    betas: tuple[Beta, Beta] = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 0.0,
) -> torch.optim.Adam:
    """Adam (L2 weight decay added to the gradient)."""
    return torch.optim.Adam(parameters, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
