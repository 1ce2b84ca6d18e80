"""torch.distributed set-up from the environment ``torchrun`` provides, and the job's end.

Under ``torchrun`` (or ``brainsynth run --nproc-per-node N``, which goes through the same
elastic launcher) every process reads RANK / WORLD_SIZE / LOCAL_RANK and joins one process group:
gloo on CPU, nccl on CUDA. Without those variables the run is a single process.

How a job ends:

* finished: every rank meets the others at a barrier after the last collective, then leaves the
  process group (`teardown`), which frees it and stops its threads while the interpreter is
  still whole. ``torch.distributed.optim`` (ZeRO) is imported before the group is created: imported
  after, its TorchScript compilation keeps a reference to the live default group, which
  ``destroy_process_group`` then cannot free; its gloo threads met the interpreter's shutdown and
  now and then aborted a finished rank at exit (``terminate called without an active exception``).
* a worker fails: it prints its own error; the launcher stops the others and exits with its code.
* a worker is killed from outside: the launcher reports its rank and the signal in one line.
* the launcher gets SIGTERM or SIGINT: it stops every worker and `launch` raises `signals.Stopped`
  (one line from the CLI). Workers die with their launcher even when it is SIGKILLed
  (`signals.follow_launcher`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from . import signals
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
    if world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        signals.follow_launcher()
    if world_size > 1 and not dist.is_initialized():
        # Before the group exists: imported later, it keeps the group alive (see the module docstring).
        import torch.distributed.optim  # noqa: F401

        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
"""What gloo says when another process of the job has exited in the middle of a collective."""

REPORT_DELAY_S = 2.0
"""How long a rank other than 0 waits before reporting a user error: when every rank hits the same
error, rank 0 reports it and the launcher stops the others before they repeat it."""

PEER_FAILURE_WAIT_S = 30.0
"""How long a rank whose peer has died waits, quietly, for the launcher to stop it."""


def is_peer_failure(exc: BaseException) -> bool:
    """True when `exc` only says that another process of the job is gone (it reports its own error)."""
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in PEER_GONE)


def wait_to_be_stopped(timeout: float = PEER_FAILURE_WAIT_S) -> NoReturn:
    """Stay quiet until the launcher stops this process; exit 1 after `timeout` if none does."""
    time.sleep(timeout)
    os._exit(1)


def teardown(finished: bool = False) -> None:
    """Leave the process group. After a finished run every rank first meets the others (the last
    collective), so no rank tears down gloo's connections while a peer still uses them; then the
    group is destroyed, which frees it: no gloo thread is left for the interpreter's shutdown."""
    if dist.is_available() and dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def launch(nproc_per_node: int, argv: list[str], directory: str | os.PathLike | None = None) -> int:
    """Re-run ``brainsynth <argv>`` in `nproc_per_node` processes through torch's elastic launcher.

    When one process fails the launcher stops the others (within its 0.1 s monitor interval
    plus their shutdown). The failing process has printed its own message; the exit code
    returned is that process's. A worker killed by a signal is reported here, with its rank
    (`RunError`, exit code 128 + the signal); a signal to this process stops every worker and
    raises `signals.Stopped`. `directory`: the run's, where a lock rank 0 could not release
    (it was killed) is removed once the job has ended.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from . import locks

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc_per_node}", "--module", "brainsynth", *argv]
    )
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    previous = os.environ.get(signals.LAUNCHER_PID)
    os.environ[signals.LAUNCHER_PID] = str(os.getpid())
    try:
        run(args)
    except ChildFailedError as exc:
        return _failed_child(exc.failures)
    except SignalException as exc:  # torch has stopped every worker by now
        raise signals.Stopped(int(exc.sigval), ": every process of the job was stopped") from None
    finally:
        for sig, handler in handlers.items():  # torch leaves its own installed
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if previous is None:
            os.environ.pop(signals.LAUNCHER_PID, None)
        else:
            os.environ[signals.LAUNCHER_PID] = previous
        if directory is not None:
            locks.release_orphaned(directory)
    return 0


def _failed_child(failures: Mapping[int, Any]) -> int:
    """The job's exit code from the first failure; a worker ended by a signal is reported here."""
    if not failures:
        return 1
    rank, first = next(iter(failures.items()))  # in the order torch saw them: the cause comes first
    code = int(first.exitcode)
    signum = -code if code < 0 else code - 128 if code > 128 else None
    if signum is None:
        return code  # the worker printed its own error
    error = RunError(
        f"rank {rank} (pid {first.pid}) was {'killed' if code < 0 else 'stopped'} by {signals.signal_name(signum)} "
        f"from outside the job; the other processes were stopped. Checkpoints written so far are kept "
        f"(training continues with --resume)."
    )
    error.exit_code = 128 + signum
    raise error


def wrap(module: torch.nn.Module, ctx: DistributedContext, broadcast_buffers: bool = True) -> torch.nn.Module:
    """DDP-wrap a trained module when the job has more than one process.

    DDP copies rank 0's parameters to every rank, but with ``broadcast_buffers=False`` it leaves
    the buffers alone; a module that keeps its buffers in step itself (the EMA codebook sums its
    statistics over ranks) still has to start from the same ones, so they are copied here.
    """
    if not ctx.is_distributed:
        return module
    if not broadcast_buffers:
        with torch.no_grad():
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the per-forward buffer sync; older versions only know broadcast_buffers.
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    return ddp(module, device_ids=device_ids, **{sync: broadcast_buffers})


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


def gather_objects(value: Any, ctx: DistributedContext) -> list[Any]:
    """`value` of every rank, in rank order (``[value]`` in a single process)."""
    if not ctx.is_distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def state_digests(module: torch.nn.Module, buffers: bool = True) -> dict[str, str]:
    """Key -> SHA-1 of the exact bytes of each parameter (and buffer): bit-identity, cheaply compared."""
    named = list(module.named_parameters()) + (list(module.named_buffers()) if buffers else [])
    digests = {}
    for name, tensor in named:
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digests[name] = hashlib.sha1(data.tobytes()).hexdigest()
    return digests


def check_replicas(modules: Mapping[str, tuple[torch.nn.Module, bool]], ctx: DistributedContext) -> dict[str, list[str]]:
    """Check that every rank holds bit-identical copies of `modules`; return each rank's digest.

    `modules` maps a name to ``(module, with_buffers)``: parameters are always compared, buffers
    only where the module keeps them in step itself. A difference is a synchronisation bug that
    would otherwise go unnoticed for the rest of the run, so it stops the run.
    """
    local = {name: state_digests(module, with_buffers) for name, (module, with_buffers) in modules.items()}
    ranks = gather_objects(local, ctx)
    for name in modules:
        for key, digest in ranks[0][name].items():
            for rank, other in enumerate(ranks[1:], start=1):
                if other[name].get(key) != digest:
                    if not ctx.is_main:
                        raise SystemExit(RunError.exit_code)  # every rank sees it; rank 0 says it once
                    raise RunError(
                        f"module '{name}': '{key}' differs between rank 0 and rank {rank}. The "
                        f"replicas went out of sync: some state is not synchronised over ranks (a "
                        f"codebook with ddp_sync: false, or a bug worth reporting with the recipe). "
                        f"The last good checkpoint is kept."
                    )
    return {
        name: [hashlib.sha1("".join(r[name][k] for k in sorted(r[name])).encode()).hexdigest() for r in ranks]
        for name in modules
    }
