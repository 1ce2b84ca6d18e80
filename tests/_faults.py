"""Faults for tests/test_faults.py and benchmarks/faults.py, and what a run has finished.

* `start` / `kill_when`: a real ``brainsynth run`` in its own session, SIGKILLed (the whole
  process group, as a scheduler ends a job) once a condition holds;
* `full_disk`: a size-limited tmpfs mounted where a run will live (real ``ENOSPC``), when this
  machine allows mounting; `enospc_after` injects ``ENOSPC`` at the file layer in-process instead;
* `corrupt`: damage a file in place, as a disk error or a bad copy would;
* `finished` / `differences` / `losses`: the finished files of a run (checkpoints by the
  tensors they hold, data files by sha256), to compare an ending with an uninterrupted run and
  to count files a fault lost.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fnmatch
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from brainsynth.core.files import is_data_file
from brainsynth.core.run_log import read_metrics

TOKENIZER = """\
task: tokenizer
experiment: {{name: tok, root: {root}}}
seed: 5
device: cpu
data: {{name: nifti, train: {cohort}/train.tsv, val: {cohort}/val.tsv, roi: [24, 24, 24], cache: memory}}
network: {{name: baseline_vqvae, channels: 4, levels: 2, num_res_layers: 1, embedding_dim: 4,
          codebook: {{name: ema, num_embeddings: 16, decay: 0.5, dead_code_restart: true, restart_every: 2}}}}
loss: {{name: mse}}
discriminator: {{name: baseline_discriminator, channels: 4, num_layers: 2, norm: none}}
adversarial: {{weight: 0.1, warmup_epochs: 1}}
metrics: [{{name: mae}}]
optimizer: {{lr: 0.003}}
train: {{epochs: 2, batch_size: 1, log_every: 1, checkpoint_every: 2, best_metric: mae}}
"""
"""A tokenizer of seconds (24^3 volumes, 6x6x6 token grid) with its discriminator: 6 training
subjects of `COHORT` make 6 steps per epoch, ``last.pt`` every 2 (mid-epoch too). Dead codes are
restarted so that the grids use most of the codebook (a collapsed codebook gives identical grids,
and then identical samples whatever their seeds, which would hide a resumed sample drawn wrong)."""

PRIOR = """\
task: transformer
experiment: {{name: prior, root: {root}}}
seed: 2
device: cpu
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
ordering: {{name: raster_scan}}
network: {{name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}}
optimizer: {{name: sgd, lr: 0.02, momentum: 0.9}}
train: {{epochs: 2, batch_size: 1, log_every: 1, checkpoint_every: 2}}
sample: {{num_samples: 6, batch_size: 1}}
likelihood: {{batch_size: 1}}
"""
"""A prior of seconds over `TOKENIZER`'s grids (``tokens`` = the tokenizer run's tokens folder),
trained little enough that samples of different seeds differ."""

COHORT = {"subjects": 8, "spacing": 4.0, "seed": 3, "val_fraction": 0.25}
"""The demo cohort both recipes train on: 6 training and 2 validation subjects at 4 mm."""

DATA_SUFFIXES = (".npy", ".nii.gz", ".png", ".csv")
"""What a mode finishes besides checkpoints: token grids, samples and their previews, likelihood
maps, tables. Logs and records (json/yaml) name their run's own paths, so they are not compared."""


# -- kills ----------------------------------------------------------------------------------------
def start(args: list[str], log: Path | None = None) -> subprocess.Popen:
    """``python -m brainsynth ARGS`` in a session of its own (so a kill reaches every rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = open(log, "wb") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "brainsynth", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    finally:
        if log is not None:
            out.close()


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL the process group once `ready()` holds; False when the run ended first."""
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None:
            if ready():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run (pid {process.pid}) neither ended nor became ready in {timeout:.0f} s")
            time.sleep(0.002)
        return False
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # ranks a launcher left behind
        process.wait(timeout=60)


def train_step(run_dir: Path, step: int) -> Callable[[], bool]:
    """True once the run has logged training step `step`."""
    log = Path(run_dir) / "logs" / "metrics.jsonl"

    def ready() -> bool:
        if not log.is_file():
            return False
        steps = [r["step"] for r in read_metrics(log) if r.get("split") == "train"]
        return bool(steps) and steps[-1] >= step

    return ready


def files_written(folder: Path, pattern: str, count: int) -> Callable[[], bool]:
    """True once `folder` holds `count` finished files matching `pattern` (recursively)."""
    folder = Path(folder)

    def ready() -> bool:
        return folder.is_dir() and sum(1 for p in folder.rglob(pattern) if is_data_file(p)) >= count

    return ready


def after(seconds: float) -> Callable[[], bool]:
    """True `seconds` after it is made: a kill at a moment chosen by time alone."""
    due = time.monotonic() + seconds
    return lambda: time.monotonic() >= due


# -- full disk --------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_disk(folder: Path, size: int) -> Iterator[Callable[[int], None] | None]:
    """A tmpfs of `size` bytes mounted at `folder`; yields ``resize(bytes)``, or None where mounting fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0 if hasattr(os, "geteuid") and os.geteuid() == 0 else False

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True, capture_output=True)

    try:
        yield resize if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def used_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


class _Limited(io.RawIOBase):
    """A file opened for writing whose writes fail with ENOSPC once the shared budget is spent."""

    def __init__(self, handle, disk: "_Disk", name: str) -> None:
        self._handle, self._disk, self._name = handle, disk, name

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if self._disk.left < size:
            self._disk.hits.append(self._name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name
        self._disk.left -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def close(self) -> None:
        self._handle.close()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._handle.fileno()

    def flush(self) -> None:
        self._handle.flush()

    def seek(self, *args) -> int:
        return self._handle.seek(*args)

    def tell(self) -> int:
        return self._handle.tell()


class _Disk:
    def __init__(self, left: int) -> None:
        self.left = left
        self.hits: list[str] = []


@contextlib.contextmanager
def enospc_after(root: Path, budget: int, pattern: str = "*") -> Iterator[_Disk]:
    """In this process, writes to files under `root` named like `pattern` fail with ENOSPC once
    `budget` bytes went to such files.

    The fallback where no tmpfs can be mounted: `open` (and `io.open`, which pathlib uses) hand
    out handles that count bytes; ``disk.hits`` lists the files whose write failed.
    """
    disk = _Disk(budget)
    real_open = builtins.open
    root = str(Path(root).resolve())

    def limited_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            path = os.path.abspath(os.fspath(file))
            if path.startswith(root) and fnmatch.fnmatch(os.path.basename(path), pattern):
                return (_Limited if "b" in mode else _LimitedText)(handle, disk, path)
        return handle

    builtins.open = io.open = limited_open
    try:
        yield disk
    finally:
        builtins.open = io.open = real_open


class _LimitedText(_Limited):
    def write(self, data) -> int:
        size = len(str(data).encode())
        if self._disk.left < size:
            self._disk.hits.append(self._name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name
        self._disk.left -= size
        return self._handle.write(data)


# -- corruption -------------------------------------------------------------------------------------
def corrupt(path: Path) -> None:
    """Overwrite the middle of a file with zeros, in place and at the same size (a disk error)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 3)
        handle.write(b"\0" * max(1, size // 3))


# -- what a run finished ----------------------------------------------------------------------------
def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(str((value.dtype, tuple(value.shape))).encode())
        digest.update(value.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()
                      if value.numel() else b"")
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def checkpoint_digest(path: Path) -> str:
    """``<step>:<sha256>`` of what a checkpoint continues from: weights, buffers, optimizer/schedule/
    scaler states, RNG states, epoch, step and best value (not the recipe text, which names its run)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for key in ("modules", "optimizers", "schedulers", "scalers", "rng_ranks", "epoch", "step"):
        _feed(digest, payload.get(key))
    _feed(digest, (payload.get("extra") or {}).get("best"))
    return f"{int(payload['step'])}:{digest.hexdigest()}"


UNREADABLE = "unreadable"


def finished(run_dir: Path) -> dict[str, str]:
    """Relative path -> digest of every finished file of a run (an unreadable checkpoint: `UNREADABLE`)."""
    run_dir = Path(run_dir)
    found: dict[str, str] = {}
    if not run_dir.is_dir():
        return found
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or not is_data_file(path):
            continue
        name = str(path.relative_to(run_dir))
        if path.suffix == ".pt":
            try:
                found[name] = checkpoint_digest(path)
            except Exception:
                found[name] = UNREADABLE
        elif path.name.endswith(DATA_SUFFIXES) and not name.startswith("logs"):
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def differences(reference: dict[str, str], ending: dict[str, str]) -> list[str]:
    """Files of the uninterrupted run that the faulted one lacks or holds otherwise, and extra ones."""
    out = [f"{name}: missing" for name in reference if name not in ending]
    out += [f"{name}: differs" for name in reference if name in ending and ending[name] != reference[name]]
    out += [f"{name}: extra" for name in ending if name not in reference]
    return out


def _step(digest: str) -> int:
    return int(digest.split(":", 1)[0])


def losses(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Finished files that a fault and its recovery lost: gone, changed, damaged, or gone back.

    Checkpoints are replaced as training goes on: one is lost when it is gone, when a readable one
    became unreadable, or when it now holds an earlier step than before the fault. Data files
    (token grids, samples, maps, tables) are lost when gone or changed.
    """
    lost = []
    for name, digest in before.items():
        now = after.get(name)
        if now is None:
            lost.append(f"{name}: gone")
        elif name.endswith(".pt"):
            if digest == UNREADABLE:
                continue
            if now == UNREADABLE:
                lost.append(f"{name}: damaged")
            elif _step(now) < _step(digest):
                lost.append(f"{name}: went back from step {_step(digest)} to {_step(now)}")
        elif now != digest:
            lost.append(f"{name}: changed")
    return lost
