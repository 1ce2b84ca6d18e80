"""torch.distributed set-up from the environment ``torchrun`` provides.

Under ``torchrun`` (or ``brainsynth run --nproc-per-node N``, which goes through the same
elastic launcher) every process reads RANK / WORLD_SIZE / LOCAL_RANK and joins one process group:
gloo on CPU, nccl on CUDA. Without those variables the run is a single process.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from .errors import RunError


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def choose_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RunError("device: cuda was asked for, but no CUDA GPU is visible. Use device: auto or cpu.")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistributedContext:
    """Join the process group if launched by torchrun; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc_per_node: int, argv: list[str]) -> int:
    """Re-run ``brainsynth <argv>`` in `nproc_per_node` processes through torch's elastic launcher."""
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc_per_node}", "--module", "brainsynth", *argv]
    )
    try:
        run(args)
    except Exception as exc:  # ChildFailedError: the failing rank already printed its message
        name = type(exc).__name__
        if name == "ChildFailedError":
            return 1
        raise
    return 0


def wrap(module: torch.nn.Module, ctx: DistributedContext, broadcast_buffers: bool = True) -> torch.nn.Module:
    """DDP-wrap a trained module when the job has more than one process."""
    if not ctx.is_distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=broadcast_buffers)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def all_reduce_mean(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in a single process)."""
    if not ctx.is_distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return {k: (tensor[i] / ctx.world_size).item() for i, k in enumerate(keys)}
