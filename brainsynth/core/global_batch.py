"""The global batch of a training step, for components that draw from it at random.

Under DDP each of N ranks holds B items of a global batch of N x B. The loop's sampler (torch's
DistributedSampler) deals one permutation round-robin, so item i of rank r is item ``i * N + r``
of the batch one process loads with batch size N x B. A component that draws at random from its
batch (dead-code restart candidates, the perceptual loss's slices) trains the same under N
processes as under one only if it draws over that global batch, in that order, with a generator
in the same state on every rank and in the single process; a per-rank draw from torch's global
RNG (seeded ``seed + rank``) makes N x B a different run from 1 x NB.

The training loop opens `step_scope` around every step; inside it `current()` returns the
`Step`, whose `Step.generator` is seeded from (run seed, step, stream name) alone. Outside a
training step (evaluation, a component used on its own) `current()` is None and components draw
as before, from torch's global RNG and their own batch. Rows (the flattened voxels or slices of
the items) are addressed through a `Layout`, which knows which rank holds which global row.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
from collections.abc import Iterator

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Step:
    """One training step as every rank sees it."""

    seed: int
    step: int
    rank: int = 0
    world_size: int = 1

    def generator(self, stream: str) -> torch.Generator:
        """A CPU generator seeded from (seed, step, `stream`): the same on every rank and in one
        process. Each call starts the stream afresh, so a component draws once per step per stream."""
        digest = hashlib.sha256(f"{self.seed}/{self.step}/{stream}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    def layout(self, items: int, rows_per_item: int, device: torch.device) -> Layout:
        """The global layout of rows when this rank holds `items` items of `rows_per_item` rows each
        (under DDP a collective on `device`, the process group's: every rank calls it at the same point)."""
        return Layout.gather(items, rows_per_item, self.rank, self.world_size, device)


_current: contextvars.ContextVar[Step | None] = contextvars.ContextVar("brainsynth_step", default=None)


def current() -> Step | None:
    """The training step being run, or None outside one."""
    return _current.get()


@contextlib.contextmanager
def step_scope(seed: int, step: int, rank: int = 0, world_size: int = 1) -> Iterator[Step]:
    """Make `Step` (seed, step) current for the code inside (the training loop wraps each step)."""
    token = _current.set(Step(seed, step, rank, world_size))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the rows of the global batch live: global row g is row ``local[g]`` of rank ``rank[g]``.

    Global items run round-robin over ranks (item i of rank r before item i of rank r + 1, and
    after every rank's item i - 1); each item's rows are consecutive, as in a tensor flattened in
    C order from ``[items, rows_per_item, ...]``.
    """

    rank: torch.Tensor
    local: torch.Tensor
    this_rank: int = 0
    world_size: int = 1

    @classmethod
    def gather(cls, items: int, rows_per_item: int, this_rank: int, world_size: int, device: torch.device) -> Layout:
        shape = torch.tensor([[items, rows_per_item]], dtype=torch.long, device=device)
        if world_size > 1:
            every = [torch.zeros_like(shape) for _ in range(world_size)]
            dist.all_gather(every, shape)
            shapes = torch.cat(every).cpu().tolist()
        else:
            shapes = shape.tolist()
        return cls.from_shapes([(int(n), int(rows)) for n, rows in shapes], this_rank)

    @classmethod
    def from_shapes(cls, shapes: list[tuple[int, int]], this_rank: int = 0) -> Layout:
        """The layout for ranks holding ``shapes[r] = (items, rows_per_item)``."""
        ranks, locals_ = [], []
        for item in range(max(n for n, _ in shapes)):
            for r, (n, rows) in enumerate(shapes):
                if item < n:
                    ranks.append(torch.full((rows,), r, dtype=torch.long))
                    locals_.append(torch.arange(item * rows, (item + 1) * rows))
        empty = torch.zeros(0, dtype=torch.long)
        return cls(torch.cat(ranks) if ranks else empty, torch.cat(locals_) if locals_ else empty, this_rank, len(shapes))

    @property
    def total(self) -> int:
        """Rows in the global batch."""
        return int(self.rank.numel())

    def mine(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Of the global `rows` (a CPU long tensor), the positions that this rank holds and their local rows."""
        positions = (self.rank[rows] == self.this_rank).nonzero().view(-1)
        return positions, self.local[rows[positions]]

    def take(self, local: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Global `rows` of a tensor whose first dimension holds this rank's rows, identical on
        every rank (each rank fills in its own rows, then the parts are summed over ranks)."""
        positions, where = self.mine(rows)
        picked = local.new_zeros((len(rows), *local.shape[1:]))
        picked[positions.to(local.device)] = local[where.to(local.device)]
        if self.world_size > 1:
            dist.all_reduce(picked)
        return picked
