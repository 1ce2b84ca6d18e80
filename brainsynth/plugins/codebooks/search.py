"""Pieces every codebook shares: nearest-code search, code statistics, DDP sync, dead-code restarts.

Nothing here builds a dense ``[voxels x codes]`` one-hot matrix: counts come from ``bincount``,
sums from ``index_add_``, and distances are computed in chunks of at most `max_elements`
entries, so a 160x224x160 volume quantised at full resolution still fits in memory.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from brainsynth.core import global_batch
from brainsynth.core.errors import RecipeError


def flatten_channels_last(z: torch.Tensor) -> torch.Tensor:
    """``[B, D, *grid]`` → ``[B * prod(grid), D]`` (a copy, rows in C order of ``[B, *grid]``)."""
    return torch.movedim(z, 1, -1).reshape(-1, z.shape[1])


def unflatten_channels_first(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of `flatten_channels_last` for a tensor shaped like `like`."""
    grid = (like.shape[0], *like.shape[2:])
    return torch.movedim(flat.view(*grid, flat.shape[1]), -1, 1).contiguous()


@torch.no_grad()
def nearest_codes(flat: torch.Tensor, codes: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for every row of `flat`.

    ``argmin_k |x - e_k|^2 = argmin_k (|e_k|^2 - 2 x.e_k)``: the ``|x|^2`` term does not change
    the winner and is skipped. Rows are processed in chunks of ``max_elements // K``.
    """
    codes = codes.float()
    squared_norms = codes.pow(2).sum(1)
    rows = max(1, max_elements // codes.shape[0])
    indices = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[0], rows):
        chunk = flat[start : start + rows]
        distances = torch.addmm(squared_norms, chunk, codes.t(), beta=1.0, alpha=-2.0)
        indices[start : start + rows] = distances.argmin(dim=1)
    return indices


def code_counts(indices: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """How many times each code is used, as float ``[K]``."""
    return torch.bincount(indices.reshape(-1), minlength=num_embeddings).float()


def perplexity_and_usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(entropy)`` of the code histogram and the fraction of codes used at least once."""
    probabilities = counts / counts.sum().clamp_min(1.0)
    perplexity = torch.exp(-(probabilities * torch.log(probabilities + 1e-10)).sum())
    usage = (counts > 0).float().mean()
    return perplexity, usage


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (a no-op outside torch.distributed)."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def check_restarts_in_sync(owner: str, ddp_sync: bool) -> None:
    """Restarts under several processes need the counts summed over ranks: with per-rank counts the
    ranks restart different codes and wait for each other in the draw's collectives."""
    if not ddp_sync and distributed():
        raise RecipeError(
            f"codebook '{owner}': dead_code_restart under several processes needs ddp_sync: true "
            f"(per-rank counts restart different codes on each rank); set ddp_sync: true or run one process."
        )


@torch.no_grad()
def restart_candidates(flat: torch.Tensor, count: int, items: int) -> torch.Tensor:
    """`count` encoder vectors drawn from the batch (`flat`: `items` items' rows), identical on every rank.

    In a training step they are drawn from the vectors of every rank's batch, in the order of the
    global batch, with the step's shared generator (`brainsynth.core.global_batch`): N processes
    restart dead codes onto the vectors one process with the N-fold batch picks. Outside a step:
    rank 0's draw from its own batch, from torch's global RNG.
    """
    step = global_batch.current()
    if step is not None:
        layout = step.layout(items, flat.shape[0] // max(1, items), flat.device)
        rows = torch.randint(0, layout.total, (count,), generator=step.generator("dead_code_restart"))
        return layout.take(flat.float().contiguous(), rows)
    picks = flat[torch.randint(0, flat.shape[0], (count,), device=flat.device)].float().contiguous()
    if distributed():
        dist.broadcast(picks, src=0)
    return picks


def rule_of_thumb_decay_epochs(iterations_per_epoch: int, batch_size: int) -> int:
    """The original's warm-up length when none is given: about 2.8 M samples (200 x 437 x 32)."""
    return max(1, math.ceil(200 * 437 * 32 / max(1, iterations_per_epoch * batch_size)))


def scheduled_decay(epoch: int, start: float, target: float, schedule: str, max_epochs: int) -> float:
    """EMA decay at epoch `epoch` (1-based) for the warm-up `schedule` (reference §2.7).

    ``linear``: ``start + (target - start) * epoch / max_epochs`` up to `max_epochs`, then
    `target`. ``step``: four equal steps; step k is reached once ``epoch + 1 >= k * max_epochs / 4``.
    ``none``: `start` throughout.
    """
    if schedule == "none":
        return start
    if schedule == "linear":
        return target if epoch >= max_epochs else start + (target - start) * epoch / max_epochs
    if schedule == "step":
        steps = sum(1 for k in range(1, 5) if epoch + 1 >= k * max_epochs / 4)
        return start + (target - start) * steps / 4
    raise ValueError(f"unknown decay warm-up schedule {schedule!r}")
