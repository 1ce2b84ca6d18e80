"""Pieces every training task shares: optimizer and schedule sections, the best-metric tracker.

The original decays the learning rate exponentially every iteration, and its ``gamma: auto``
picks the rate that reaches 1e-5 at the end of training; here that is ``final_lr``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Annotated, Literal

import torch

from .schema import NonNegativeFloat, PositiveFloat, Range


@dataclasses.dataclass
class Schedule:
    """Learning-rate schedule, stepped every iteration."""

    name: Literal["constant", "exponential"] = "constant"
    gamma: Annotated[float, Range(gt=0, le=1)] | None = None
    """Per-iteration decay; with ``final_lr`` instead, gamma is chosen to end there."""
    final_lr: PositiveFloat | None = None

    @staticmethod
    def check_values(values: dict) -> str | None:
        if values["gamma"] is not None and values["final_lr"] is not None:
            return "give either gamma or final_lr, not both (final_lr picks the gamma that ends there)."
        if values["name"] == "constant" and (values["gamma"] is not None or values["final_lr"] is not None):
            return "a constant schedule takes neither gamma nor final_lr; use name: exponential."
        return None


@dataclasses.dataclass
class OptimizerConfig:
    """The ``optimizer`` recipe section."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1.0e-4
    betas: tuple[Annotated[float, Range(ge=0, lt=1)], Annotated[float, Range(ge=0, lt=1)]] = (0.9, 0.999)
    """Adam/AdamW only."""
    momentum: NonNegativeFloat = 0.0
    """SGD only."""
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: PositiveFloat | None = None
    schedule: Schedule = dataclasses.field(default_factory=Schedule)


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: dict, zero: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimizer; with `zero`, its state is sharded over ranks (ZeRO stage 1).

    A ZeroRedundancyOptimizer must be consolidated on every rank (`consolidate_state_dict`)
    before rank 0 can read its ``state_dict``; the training loop does that before each checkpoint.
    """
    name = config["name"]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    options = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if name == "sgd":
        options["momentum"] = config.get("momentum", 0.0)
    else:
        options["betas"] = tuple(config["betas"])
    parameters = [p for p in parameters if p.requires_grad]
    if zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(parameters, optimizer_class=cls, **options)
    return cls(parameters, **options)


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """An ExponentialLR stepped per iteration (constant is gamma 1)."""
    schedule = config["schedule"]
    if schedule["name"] == "constant":
        gamma = 1.0
    elif schedule["gamma"] is not None:
        gamma = schedule["gamma"]
    else:
        final_lr = schedule["final_lr"] if schedule["final_lr"] is not None else 1.0e-5
        gamma = math.exp(math.log(final_lr / config["lr"]) / max(total_steps, 1))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


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


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The autocast context for the recipe's ``precision`` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=_DTYPES.get(precision, torch.float32), enabled=precision in _DTYPES)


def slow_precision(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` would run slower than fp32 on this device, or None.

    bf16 on a CPU without native bf16 instructions (AVX512-BF16 or AMX) is emulated: a demo
    tokenizer step took 7.5x as long as in fp32 with oneDNN held to AVX2, where with AMX it took
    0.2x (benchmarks/precision.py).
    """
    if device.type != "cpu" or precision != "bf16":
        return None
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if native is None or native():
        return None
    return ("precision bf16 on a CPU without native bf16 instructions (AVX512-BF16/AMX) is emulated and "
            "several times slower than fp32; run with --set precision=fp32")


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that scales only under fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
