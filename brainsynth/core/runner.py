"""One run: its directory, seeding, distributed set-up, and the dispatch to its task's mode.

The run directory is ``<experiment.root>/<experiment.name>/``. A mode that creates a run
(``train``) refuses an existing directory unless ``--resume``; the other modes (extract, sample,
...) work inside a run that exists. Each start's resolved recipe is recorded there, append-only
(`records`): ``--resume`` with a recipe that changes the result is refused unless
``--allow-changes``, and a directory without a checkpoint (a half-made run) is not resumed.

Every start of a mode first removes the temporary files that interrupted writes left in the run
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

from . import distributed, records
from .errors import BrainsynthError, RunError
from .files import inside, remove_leftovers, write_bytes_atomic
from .logging import MetricsLogger, Progress, warn
from .recipe import Recipe
from .registry import Registry
from .training import slow_precision

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


def prepare_directory(recipe: Recipe, resume: bool, allow_changes: bool = False) -> tuple[Path, Path | None]:
    """Check the run directory against the mode and --resume, create it and record the recipe.

    Returns the directory and the record this start wrote (None when the recipe equals the last
    record). An OS error on the way (a read-only or full disk) is a `RunError` naming
    ``experiment.root``.
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


def _prepare_directory(recipe: Recipe, resume: bool, allow_changes: bool) -> tuple[Path, Path | None]:
    directory = run_directory(recipe)
    creating = recipe.mode in CREATING_MODES
    if creating:
        if directory.exists() and not resume:
            raise RunError(
                f"run directory {directory} already exists. Pass --resume to continue it, or choose "
                f"another name with --set experiment.name=NAME (runs are never overwritten)."
            )
        if resume and not directory.exists():
            raise RunError(f"--resume: run directory {directory} does not exist; start it without --resume.")
        if resume:
            records.resumable(directory, recipe.mode)
        else:
            (directory / "checkpoints").mkdir(parents=True)
    elif not directory.is_dir():
        raise RunError(
            f"run directory {directory} does not exist: mode '{recipe.mode}' works inside a "
            f"trained run. Train it first (--mode train) or set experiment.name/root to the run."
        )
    record = records.start(directory, recipe, creating=creating, resume=resume, allow_changes=allow_changes)
    if creating:
        (directory / "checkpoints").mkdir(exist_ok=True)
    return directory, record


def os_error(exc: OSError, recipe: Recipe) -> RunError:
    """An OS error during a run (unwritable folder, full disk, a file where a folder goes) as one line."""
    target = exc.filename if exc.filename is not None else run_directory(recipe)
    return RunError(
        f"{target}: {exc.strerror or exc} (mode '{recipe.mode}'). Check that the run directory "
        f"{run_directory(recipe)} is writable, has free space, and that no file stands where a folder goes."
    )


def execute(recipe: Recipe, registry: Registry, resume: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Run the recipe's task in its mode in this process; returns the final metrics."""
    dist_ctx = distributed.setup(recipe["device"])
    created = recipe.mode in CREATING_MODES and not run_directory(recipe).exists()
    record: Path | None = None
    before: records.Snapshot = {}
    finished = False
    try:
        # Rank 0 checks and creates the directory; the others wait for it (a failure on rank 0
        # ends the whole job through the launcher).
        if dist_ctx.is_main:
            directory, record = prepare_directory(recipe, resume, allow_changes)
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
        try:
            metrics = task.run(run) or {}
        finally:
            log.close()
        if dist_ctx.is_main:
            write_bytes_atomic(directory / f"metrics.{recipe.mode}.json", json.dumps(metrics, indent=2, default=str).encode())
        finished = True
        return metrics
    except BaseException as exc:
        if dist_ctx.is_main:
            _leave_nothing(recipe, created, record, before)
        if isinstance(exc, (BrainsynthError, OSError)):
            if dist_ctx.is_distributed and not dist_ctx.is_main:
                time.sleep(distributed.REPORT_DELAY_S)  # an error every rank hits is reported by rank 0 alone
            if isinstance(exc, OSError):
                raise os_error(exc, recipe) from exc
        elif isinstance(exc, Exception) and dist_ctx.is_distributed and distributed.is_peer_failure(exc):
            distributed.wait_to_be_stopped()  # the rank that failed reports why; this one stays quiet
        raise
    finally:
        # After a failure other ranks may sit in a collective: leave the group to process exit
        # (an orderly teardown can block under nccl).
        if finished or not dist_ctx.is_distributed:
            distributed.teardown(finished)


def _leave_nothing(recipe: Recipe, created: bool, record: Path | None, before: records.Snapshot) -> None:
    """After a failure, whatever its cause: remove the directory this start created while it holds no
    checkpoint, else the record this start wrote while nothing else was written."""
    directory = run_directory(recipe)
    try:
        if created:
            if directory.is_dir() and not any(directory.rglob("*.pt")):
                shutil.rmtree(directory, ignore_errors=True)
        elif record is not None:
            records.discard_unless_produced(directory, before, record)
    except OSError:
        pass  # the failure being reported matters more than this clean-up
