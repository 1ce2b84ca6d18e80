"""The linear warm-up ramp shared by schedules that start small: the adversarial weight and the learning rate."""

from __future__ import annotations


def warmup_factor(epoch: float, start: float = 0.0, length: float = 0.0) -> float:
    """0 before `start`, then rising linearly to 1 over `length` epochs (a step at `start` if 0).

    `epoch` is 0-based and may be fractional (``epoch + iteration / iterations_per_epoch``); a
    schedule counted in steps passes steps.
    """
    if epoch < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (epoch - start) / length)
