"""The global batch a training step's components draw from: the layout over ranks and the shared generator."""

from __future__ import annotations

import torch

from brainsynth.core import global_batch
from brainsynth.core.global_batch import Layout, Step
from brainsynth.core.loop import epoch_batches, epoch_indices


def test_the_layout_interleaves_ranks_items_as_the_sampler_deals_them():
    # rank r's batch k of B holds the global batch's items i * world + r (one process: batch world x B)
    one = epoch_batches(epoch_indices(8, seed=3, epoch=1), 4)
    ranks = [epoch_batches(epoch_indices(8, seed=3, epoch=1, rank=r, world_size=2), 2) for r in range(2)]
    for k, batch in enumerate(one):
        assert batch == [ranks[i % 2][k][i // 2] for i in range(4)]
    layout = Layout.from_shapes([(2, 3), (2, 3)], this_rank=1)  # 2 items of 3 rows on each rank
    assert layout.total == 12
    assert layout.rank.tolist() == [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3
    assert layout.local.tolist() == [0, 1, 2] * 2 + [3, 4, 5] * 2
    positions, local = layout.mine(torch.tensor([11, 0, 4]))
    assert positions.tolist() == [0, 2] and local.tolist() == [5, 1]


def test_ranks_holding_different_shapes_still_get_one_layout():
    layout = Layout.from_shapes([(2, 1), (1, 2)])
    assert layout.rank.tolist() == [0, 1, 1, 0] and layout.local.tolist() == [0, 0, 1, 1]


def test_one_process_takes_its_rows_directly():
    local = torch.arange(12.0).view(6, 2)
    picked = Layout.from_shapes([(2, 3)]).take(local, torch.tensor([5, 0, 5]))
    assert torch.equal(picked, local[[5, 0, 5]])


def test_the_step_generator_depends_on_seed_step_and_stream_only():
    draw = lambda step, stream: torch.randperm(50, generator=step.generator(stream))  # noqa: E731
    assert torch.equal(draw(Step(1, 7, rank=0, world_size=2), "a"), draw(Step(1, 7, rank=1, world_size=2), "a"))
    assert torch.equal(draw(Step(1, 7), "a"), draw(Step(1, 7, rank=1, world_size=2), "a"))
    assert not torch.equal(draw(Step(1, 7), "a"), draw(Step(1, 8), "a"))
    assert not torch.equal(draw(Step(1, 7), "a"), draw(Step(2, 7), "a"))
    assert not torch.equal(draw(Step(1, 7), "a"), draw(Step(1, 7), "b"))


def test_the_step_is_current_only_inside_its_scope():
    assert global_batch.current() is None
    with global_batch.step_scope(5, 3, rank=1, world_size=2) as step:
        assert global_batch.current() is step and (step.seed, step.step, step.rank, step.world_size) == (5, 3, 1, 2)
    assert global_batch.current() is None
