"""The ``exponential`` learning-rate schedule: the original's decay, and the warm-up in front of it."""

from __future__ import annotations

import pytest
import torch

from brainsynth.plugins.optimizers.exponential import Exponential


def rates(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def adam(lr: float = 2e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_without_warmup_it_is_torchs_chained_decay_bit_for_bit():
    ours, theirs = adam(), adam()
    exponential = Exponential(ours, total_steps=50, final_lr=2e-4)
    chained = torch.optim.lr_scheduler.ExponentialLR(theirs, gamma=exponential.gamma)
    assert rates(exponential, ours, 50) == rates(chained, theirs, 50)


def test_warmup_ramps_linearly_then_decays_to_the_final_rate():
    optimizer = adam()
    scheduler = Exponential(optimizer, total_steps=100, final_lr=2e-4, warmup_steps=10)
    lrs = rates(scheduler, optimizer, 100)
    gamma = scheduler.gamma
    assert lrs[:10] == pytest.approx([2e-3 * gamma**t * (t + 1) / 10 for t in range(10)])
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a > b for a, b in zip(lrs[9:], lrs[10:]))
    assert scheduler.get_last_lr()[0] == pytest.approx(2e-4)


def test_a_restored_warmup_continues_where_it_stopped():
    """Resume loads the optimizer's and the schedule's state: the rates go on as if never stopped."""
    first = adam()
    scheduler = Exponential(first, total_steps=40, final_lr=2e-4, warmup_steps=8)
    rates(scheduler, first, 5)
    states = first.state_dict(), scheduler.state_dict()
    rest = rates(scheduler, first, 20)

    second = adam()
    restored = Exponential(second, total_steps=40, final_lr=2e-4, warmup_steps=8)
    second.load_state_dict(states[0])
    restored.load_state_dict(states[1])
    assert rates(restored, second, 20) == rest
