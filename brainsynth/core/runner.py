"""One run: its directory, seeding, distributed set-up, and the dispatch to its task's mode.

The run directory is ``<experiment.root>/<experiment.name>/``. A mode that creates a run
(``train``) refuses an existing directory unless ``--resume``; the other modes (extract, sample,
...) work inside a run that exists. Each start's resolved recipe is recorded there, append-only
(`records`): ``--resume`` with a recipe that changes the result is refused unless
``--allow-changes``, and a directory without a checkpoint (a half-made run) is not resumed.

One job at a time writes into a run: every start of a mode takes the run directory's lock
(`locks`) before it reads or writes anything there, and a start refused because another job holds
it writes nothing. Under several processes rank 0, the only process that writes into the run,
holds it. The lock is released however the start ends: normally, on an error, on SIGTERM or
SIGHUP (`signals.stop_on_signals` turns them into an exception, so the clean-up runs) and on
Ctrl-C. A pipeline holds its own directory's lock for the whole pipeline, and each stage, run
by `execute` in the same process, holds its stage directory's lock while it runs: every lock
names one directory and a stage's directory is never its pipeline's, so a stage never waits on
its parent, and a second start of the pipeline, or of a running stage, is refused.

Every start of a mode then removes the temporary files that interrupted writes left in the run
(`files.remove_leftovers`), and an OS error during a run (unwritable folder, full disk) is
reported as one `RunError` line, like a user error. Whatever fails, a start leaves nothing
behind: a directory it created is removed while it holds no checkpoint, and the record it wrote
is taken back while nothing else was written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed, locks, plugins, records, signals
from .errors import BrainsynthError, RunError
from .files import inside, remove_leftovers, write_bytes_atomic
from .run_log import MetricsLogger, Progress, warn
from .recipe import Recipe
from .registry import Registry
from .precision import slow_precision

CREATING_MODES = ("train", "run")
"""Modes that create a run directory; every other mode works inside an existing one."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the caller adds the rank)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclasses.dataclass
class Run:
    """What a task's mode receives: the recipe, where to write, and this process's place."""

    recipe: Recipe
    directory: Path
    registry: Registry
    dist: distributed.DistributedContext
    resume: bool = False
    log: MetricsLogger | None = None
    allow_changes: bool = False
    """``--allow-changes``: a resumed run may differ from its record (recorded as an amendment)."""

    @property
    def mode(self) -> str:
        return self.recipe.mode

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    def path(self, relative: str | os.PathLike, key: str) -> Path:
        """A path the run writes, from recipe key `key`: refused unless it stays inside the run."""
        parts = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        try:
            return inside(self.directory, relative, key)
        except RunError as exc:
            raise RunError(f"{self.recipe.origins(parts)}: {exc}") from None

    def build(self, section: str, **injected: Any) -> Any:
        """Build the component a recipe section names, passing engine-supplied arguments."""
        block = self.recipe[section]
        if block is None:
            return None
        return self.registry.build(self.registry_kind(section), block, **injected)

    def registry_kind(self, section: str) -> str:
        task = self.registry.get("task", self.recipe.task).factory
        kind = task.sections[section].kind
        if kind is None:
            raise KeyError(f"section '{section}' is not a component block")
        return kind

    def progress(self, total: int | None, desc: str) -> Progress:
        return Progress(total, desc, enabled=self.dist.is_main)

    def say(self, message: str) -> None:
        """A line for the user, from rank 0 only."""
        if self.dist.is_main:
            print(message, flush=True)


def run_directory(recipe: Recipe) -> Path:
    experiment = recipe["experiment"]
    return Path(experiment["root"]) / experiment["name"]


@dataclasses.dataclass
class Prepared:
    """What `prepare_directory` did: the directory, the record it wrote (None when the recipe equals the
    last record), whether it created the directory, and the lock it holds."""

    directory: Path
    record: Path | None
    created: bool
    lock: locks.RunLock


def prepare_directory(recipe: Recipe, resume: bool, allow_changes: bool = False) -> Prepared:
    """Check the run directory against the mode and --resume, create it, lock it and record the recipe.

    A start refused here (another job holds the run, the directory exists or does not, the recipe
    differs) leaves the directory as it was. An OS error on the way (a read-only or full disk) is
    a `RunError` naming ``experiment.root``.
    """
    root = Path(recipe["experiment"]["root"])
    where = recipe.origins(("experiment", "root"))
    for folder in (root, *root.parents):
        if folder.exists() and not folder.is_dir():
            raise RunError(
                f"{where}: experiment.root: {root} is not a folder ({folder} is a file); set "
                f"experiment.root to a folder where runs may be created."
            )
    try:
        return _prepare_directory(recipe, resume, allow_changes)
    except OSError as exc:
        raise RunError(
            f"{where}: experiment.root: cannot create or write the run directory "
            f"{run_directory(recipe)} ({exc.strerror or exc}); set experiment.root to a writable folder."
        ) from exc


def _prepare_directory(recipe: Recipe, resume: bool, allow_changes: bool) -> Prepared:
    directory = run_directory(recipe)
    creating = recipe.mode in CREATING_MODES
    exists = (
        f"run directory {directory} already exists. Pass --resume to continue it, or choose "
        f"another name with --set experiment.name=NAME (runs are never overwritten)."
    )
    created = False
    if creating and not resume:
        if directory.exists():
            raise RunError(exists)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir()  # of two starts of one new run, exactly one creates it
        except FileExistsError:
            raise RunError(exists) from None
        created = True
    elif creating and not directory.exists():
        raise RunError(f"--resume: run directory {directory} does not exist; start it without --resume.")
    elif not creating and not directory.is_dir():
        raise RunError(
            f"run directory {directory} does not exist: mode '{recipe.mode}' works inside a "
            f"trained run. Train it first (--mode train) or set experiment.name/root to the run."
        )
    try:
        lock = locks.acquire(directory, recipe.mode, say=lambda line: print(line, flush=True))
    except BaseException:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        if creating and resume:
            records.resumable(directory, recipe.mode)
        record = records.start(directory, recipe, creating=creating, resume=resume, allow_changes=allow_changes)
        if creating:
            (directory / "checkpoints").mkdir(exist_ok=True)
    except BaseException:
        lock.release()
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return Prepared(directory, record, created, lock)


def os_error(exc: OSError, recipe: Recipe) -> RunError:
    """An OS error during a run (unwritable folder, full disk, a file where a folder goes) as one line."""
    target = exc.filename if exc.filename is not None else run_directory(recipe)
    return RunError(
        f"{target}: {exc.strerror or exc} (mode '{recipe.mode}'). Check that the run directory "
        f"{run_directory(recipe)} is writable, has free space, and that no file stands where a folder goes."
    )


def execute(recipe: Recipe, registry: Registry, resume: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Run the recipe's task in its mode in this process; returns the final metrics.

    SIGTERM and SIGHUP raise `signals.Stopped` here, so a stopped run releases its lock and
    leaves nothing behind, as a failed one does.
    """
    with signals.stop_on_signals():
        return _execute(recipe, registry, resume, allow_changes)


def _execute(recipe: Recipe, registry: Registry, resume: bool, allow_changes: bool) -> dict[str, Any]:
    dist_ctx = distributed.setup(recipe["device"])
    prepared: Prepared | None = None
    before: records.Snapshot = {}
    finished = False
    started: Run | None = None  # rank 0's run, once the plugins were told it started
    try:
        # Rank 0 checks, creates and locks the directory; the others wait for it (a failure on
        # rank 0 ends the whole job through the launcher).
        if dist_ctx.is_main:
            prepared = prepare_directory(recipe, resume, allow_changes)
            directory, record = prepared.directory, prepared.record
            removed = remove_leftovers(directory)
            if removed:
                print(f"removed {len(removed)} files left by interrupted writes in {directory}", flush=True)
            before = records.snapshot(directory)
            slow = slow_precision(recipe["precision"], dist_ctx.device)
            if slow:
                warn(slow)
            if record is not None and ".amendment-" in record.name:
                print(f"the recipe differs from the last record: recorded as {record} "
                      f"(its first line lists the changes)", flush=True)
        else:
            directory = run_directory(recipe)
        if dist_ctx.is_distributed:
            torch.distributed.barrier()
        seed_everything(recipe["seed"] + dist_ctx.rank)
        log = MetricsLogger(directory / "logs", enabled=dist_ctx.is_main)
        run = Run(recipe=recipe, directory=directory, registry=registry, dist=dist_ctx, resume=resume, log=log,
                  allow_changes=allow_changes)
        task = registry.get("task", recipe.task).build({})
        if dist_ctx.is_main:
            log.listeners.append(lambda step, split, values: plugins.notify(
                "metrics_logged", run=run, step=step, split=split, metrics=values))
            plugins.notify("run_started", run=run)
            started = run
        try:
            metrics = task.run(run) or {}
        finally:
            log.close()
        if dist_ctx.is_main:
            write_bytes_atomic(directory / f"metrics.{recipe.mode}.json", json.dumps(metrics, indent=2, default=str).encode())
            plugins.notify("run_finished", run=run, metrics=metrics, error=None)
        finished = True
        return metrics
    except BaseException as exc:
        if started is not None and not finished:
            try:
                plugins.notify("run_finished", run=started, metrics=None, error=exc)
            except BrainsynthError as hook_error:  # the run's own error is the one to report
                print(f"warning: {hook_error}", flush=True)
        if prepared is not None:
            _leave_nothing(prepared, before)
        if isinstance(exc, (BrainsynthError, OSError)):
            if dist_ctx.is_distributed and not dist_ctx.is_main:
                time.sleep(distributed.REPORT_DELAY_S)  # an error every rank hits is reported by rank 0 alone
            if isinstance(exc, OSError):
                raise os_error(exc, recipe) from exc
        elif isinstance(exc, Exception) and dist_ctx.is_distributed and distributed.is_peer_failure(exc):
            distributed.wait_to_be_stopped()  # the rank that failed reports why; this one stays quiet
        raise
    finally:
        try:
            # After a failure other ranks may sit in a collective: leave the group to process exit
            # (an orderly teardown can block under nccl).
            if finished or not dist_ctx.is_distributed:
                distributed.teardown(finished)
        finally:
            if prepared is not None:  # after the other ranks are done with the run (teardown's barrier)
                prepared.lock.release()


def _leave_nothing(prepared: Prepared, before: records.Snapshot) -> None:
    """After a failure, whatever its cause: remove the directory this start created while it holds no
    checkpoint, else the record this start wrote while nothing else was written. The lock is not
    counted as written: it was there before `before` was taken."""
    directory = prepared.directory
    try:
        if prepared.created:
            if directory.is_dir() and not any(directory.rglob("*.pt")):
                shutil.rmtree(directory, ignore_errors=True)
        elif prepared.record is not None:
            records.discard_unless_produced(directory, before, prepared.record)
    except OSError:
        pass  # the failure being reported matters more than this clean-up
