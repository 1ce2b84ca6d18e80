"""``constant``: the learning rate stays as the optimizer sets it."""

from __future__ import annotations

import torch


def constant(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Keep the learning rate (an ExponentialLR with gamma 1, so checkpoints keep one layout)."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.0)
