"""Optimizers and learning-rate schedules for the training loop, and the best-metric tracker.

Optimizers (kind ``optimizer``) and schedules (kind ``lr_schedule``) are components: the built-in
ones (adam, adamw, sgd; constant, exponential) are a plugin, and a third party adds its own the
same way. A recipe's ``optimizer`` block names one and carries the keys every optimizer block
has (`OptimizerSettings`): ``grad_clip`` and the nested ``schedule`` block, read by the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .schema import PositiveFloat, component_block

if TYPE_CHECKING:
    import torch

    from .registry import Registry


@dataclasses.dataclass
class OptimizerSettings:
    """Keys of every ``optimizer`` block that the engine reads, whichever optimizer it names."""

    grad_clip: PositiveFloat | None = None
    """Clip the gradient norm to this value before each step."""
    schedule: component_block("lr_schedule") = dataclasses.field(default_factory=lambda: {"name": "constant"})
    """The learning-rate schedule, stepped every iteration."""


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], block: Mapping[str, Any], registry: Registry, zero: bool = False
) -> torch.optim.Optimizer:
    """The optimizer a validated ``optimizer`` block names; with `zero`, its state is sharded over
    ranks (ZeRO stage 1).

    A ZeroRedundancyOptimizer must be consolidated on every rank (`consolidate_state_dict`)
    before rank 0 can read its ``state_dict``; the training loop does that before each checkpoint.
    """
    parameters = [p for p in parameters if p.requires_grad]
    component = registry.get("optimizer", block["name"])
    if not zero:
        return component.build(block, registry=registry, parameters=parameters)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    settings = {f.name for f in dataclasses.fields(OptimizerSettings)}
    options = {k: v for k, v in block.items() if k != "name" and k not in settings}

    def local(params, **hyper):  # ZeRO builds one optimizer over each rank's shard
        return component.build({**hyper}, registry=registry, parameters=params)

    return ZeroRedundancyOptimizer(parameters, optimizer_class=local, **options)


def build_schedule(optimizer: torch.optim.Optimizer, block: Mapping[str, Any], registry: Registry, total_steps: int):
    """The ``schedule`` of a validated ``optimizer`` block, over `total_steps` iterations."""
    schedule = block.get("schedule") or {"name": "constant"}
    return registry.build("lr_schedule", schedule, optimizer=optimizer, total_steps=total_steps)


class BestTracker:
    """Remembers the best value of one metric, in the right direction for that metric."""

    def __init__(self, metric: str, direction: Literal["min", "max"], best: float | None = None) -> None:
        self.metric = metric
        self.direction = direction
        self.best = best

    def update(self, value: float) -> bool:
        """True when `value` improves on the best so far."""
        better = self.best is None or (value < self.best if self.direction == "min" else value > self.best)
        if better:
            self.best = float(value)
        return better
