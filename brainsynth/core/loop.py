"""The training loop both stages share: data order, DDP/ZeRO, precision, checkpoints, exact resume.

A task builds its modules, hands them to a `TrainingLoop` with `add`, and supplies one function:
the step on one batch. The loop owns the rest:

* **data order**: each epoch's order is drawn from (seed, epoch, rank) alone, by torch's
  DistributedSampler or MONAI's weighted one, both reshuffled per epoch. A resumed run finds the
  same order without any saved generator state, and skips the batches already done without
  loading them;
* **trained modules**: each is DDP-wrapped when the job has several processes, its batch-norm
  layers synchronised over ranks first (`batch_norm`), and gets an optimizer (sharded over ranks
  with ``zero: true``), a per-iteration schedule and a GradScaler (active under fp16 only);
* **the global batch**: every step runs inside `global_batch.step_scope`, so components that draw
  at random from the batch draw over the global one with a generator shared by every rank: N
  processes of batch B train as one process of batch N x B;
* **checkpoints**: ``last.pt`` every ``checkpoint_every`` iterations and at the end of every
  epoch (the one it replaces kept as ``previous.pt``), ``best.pt`` when the tracked metric
  improves. Before a save, ZeRO state is consolidated on rank 0, the replicas are checked
  bit-identical, and the RNG states of every rank are gathered;
* **resume**: modules, buffers, optimizers, schedules, scalers, the RNG states of python, numpy
  and torch on every rank, and the position inside the epoch come back, so on CPU a resumed run
  ends bit-identical to an uninterrupted one. When ``last.pt`` cannot be read, the run resumes
  from ``previous.pt`` and says so in one line (it re-trains the steps between them, identically).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import batch_norm, distributed, global_batch, plugins
from .checkpoint import load_checkpoint, read_checkpoint, rng_state, save_checkpoint
from .errors import CheckpointError, RunError
from .files import remove_leftovers
from .schema import NonNegativeInt, PositiveInt
from .optimization import BestTracker, build_optimizer, build_schedule
from .precision import autocast, grad_scaler

if TYPE_CHECKING:
    from .runner import Run

LOOP_KEYS = ("iteration", "world_size", "best", "best_metric", "metrics", "replicas")
"""Keys of a checkpoint's ``extra`` the loop owns; the rest belong to the task (`TrainingLoop.extra`)."""


@dataclasses.dataclass
class LoopConfig:
    """The keys of a ``train`` section the loop reads; a task's train section extends it."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 1
    """Per process: with N processes an iteration sees N x batch_size items."""
    num_workers: NonNegativeInt = 0
    log_every: PositiveInt = 10
    """Log training values every N iterations."""
    checkpoint_every: NonNegativeInt = 0
    """Also write ``last.pt`` every N iterations (0: at the end of each epoch only)."""


def evaluation_due(epoch: int, eval_every: int, epochs: int) -> bool:
    """Validate after every `eval_every`-th epoch and after the last, so ``best.pt`` has seen the final weights."""
    return (epoch + 1) % eval_every == 0 or epoch + 1 == epochs


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a step is: 0-based epoch and iteration in it, and the steps done before it."""

    epoch: int
    iteration: int
    step: int
    iterations_per_epoch: int

    @property
    def progress(self) -> float:
        """Fractional epochs done before this step (for schedules that ramp within an epoch)."""
        return self.epoch + self.iteration / self.iterations_per_epoch


def _mix(*values: int) -> int:
    """A seed for a torch.Generator that depends on every value (no two tuples collide in practice)."""
    seed = 0x2545F491
    for value in values:
        seed = (seed * 0x100000001B3 + int(value) + 0x9E3779B9) % (1 << 63)
    return seed


def epoch_indices(
    size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, weights: Sequence[float] | None = None
) -> list[int]:
    """This rank's dataset indices for `epoch`, a function of its arguments only.

    Uniform: torch's DistributedSampler (a permutation per epoch, padded so every rank gets as
    many). Weighted: MONAI's DistributedWeightedRandomSampler, drawing with replacement from
    this rank's share with a generator seeded by (seed, epoch, rank).
    """
    items = range(size)  # the samplers only need len()
    if weights is None:
        sampler = torch.utils.data.DistributedSampler(items, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    else:
        from monai.data import DistributedWeightedRandomSampler

        generator = torch.Generator().manual_seed(_mix(seed, epoch, rank))
        sampler = DistributedWeightedRandomSampler(
            items, weights=list(weights), generator=generator, num_replicas=world_size, rank=rank, seed=seed
        )
    sampler.set_epoch(epoch)
    return [int(i) for i in sampler]


def epoch_batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Full batches only (one short batch when there are fewer items than `batch_size`)."""
    full = len(indices) // batch_size
    if full == 0:
        return [list(indices)] if len(indices) else []
    return [list(indices[i * batch_size : (i + 1) * batch_size]) for i in range(full)]


class Trained:
    """One trained module: the module itself, its DDP wrapper, optimizer, schedule and scaler.

    Run forwards through `model` (the wrapper), read attributes and state from `module`.
    """

    def __init__(self, name: str, module: torch.nn.Module, model: torch.nn.Module, optimizer, scheduler, scaler,
                 grad_clip: float | None, broadcast_buffers: bool) -> None:
        self.name = name
        self.module = module
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.broadcast_buffers = broadcast_buffers

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def update(self, loss: torch.Tensor) -> None:
        """One optimisation step on `loss`: backward (scaled under fp16), clip, step, schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


StepFn = Callable[[Any, Position], Mapping[str, float]]


class TrainingLoop:
    """Epochs over one training dataset for the modules `add`-ed to it.

    Args:
        run: the run (recipe, directory, distributed context, logger).
        dataset: the training split.
        config: the task's ``train`` section (see `LoopConfig` for the keys read here).
        weights: per-item sampling weights for weighted sampling (None: uniform).
        collate_fn: the DataLoader's collate function (None: torch's default).
        desc: what progress bars call an epoch.
    """

    def __init__(
        self,
        run: Run,
        dataset: torch.utils.data.Dataset,
        config: Mapping[str, Any],
        *,
        weights: Sequence[float] | torch.Tensor | None = None,
        collate_fn: Callable | None = None,
        desc: str = "train",
    ) -> None:
        self.run = run
        self.dataset = dataset
        self.config = config
        self.weights = None if weights is None else [float(w) for w in weights]
        self.collate_fn = collate_fn
        self.desc = desc
        self.seed = int(run.recipe["seed"])
        if len(dataset) == 0:
            raise RunError("data: the train split has no items; give it at least one subject.")
        if self.weights is not None and len(self.weights) != len(dataset):
            raise RunError(f"weighted sampling: {len(self.weights)} weights for {len(dataset)} training items.")
        self.iterations_per_epoch = len(self.batches(0))
        self.total_steps = int(config["epochs"]) * self.iterations_per_epoch
        self.zero = bool(run.recipe.get("zero")) and run.dist.is_distributed
        if run.recipe.get("zero") and not run.dist.is_distributed:
            run.say("zero: true shards optimizer state over processes; a single process keeps it whole.")
        self.trained: dict[str, Trained] = {}
        self.extra: dict[str, Any] = {}
        """Task state saved in every checkpoint's ``extra`` and restored on resume (plain data)."""
        self.epoch = 0
        self.iteration = 0
        self.step = 0
        self.last_unreadable = False
        """Resumed from ``previous.pt`` because ``last.pt`` could not be read: the next save must
        not keep that ``last.pt`` as ``previous.pt``."""

    # -- building -------------------------------------------------------------------------------
    def add(self, name: str, module: torch.nn.Module, optimizer: Mapping[str, Any], *, broadcast_buffers: bool = True) -> Trained:
        """Train `module` with the `optimizer` recipe section; saved in checkpoints under `name`.

        `broadcast_buffers=False` is for modules that keep their buffers in step over ranks
        themselves (the EMA codebook): they start from rank 0's and are checked identical at
        every checkpoint. Under several processes its batch-norm layers are swapped for
        synchronised ones (the same parameters and buffers); use the returned `Trained.module`.
        """
        if self.run.dist.is_distributed:
            module, swapped = batch_norm.synchronize(module, self.run.device)
            if swapped:
                self.run.say(f"{name}: {swapped} batch-norm layers synchronised over {self.run.dist.world_size} "
                             f"processes (statistics of the global batch, as one process computes them)")
        model = distributed.wrap(module, self.run.dist, broadcast_buffers=broadcast_buffers)
        opt = build_optimizer(module.parameters(), optimizer, self.run.registry, zero=self.zero)
        scheduler = build_schedule(opt, optimizer, self.run.registry, self.total_steps)
        scaler = grad_scaler(self.run.recipe["precision"], self.run.device)
        trained = Trained(name, module, model, opt, scheduler, scaler, optimizer.get("grad_clip"), broadcast_buffers)
        self.trained[name] = trained
        return trained

    def autocast(self):
        """The recipe's precision (fp32: a no-op); codebooks switch it off for themselves."""
        return autocast(self.run.recipe["precision"], self.run.device)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`."""
        indices = epoch_indices(
            len(self.dataset), seed=self.seed, epoch=epoch, rank=self.run.dist.rank,
            world_size=self.run.dist.world_size, weights=self.weights,
        )
        return epoch_batches(indices, int(self.config["batch_size"]))

    def _loader(self, epoch: int, skip: int) -> torch.utils.data.DataLoader:
        # The generator only seeds workers; a fresh one per (epoch, rank) keeps the global RNG
        # untouched and makes a resumed epoch's workers start as the original's did.
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.batches(epoch)[skip:],
            num_workers=int(self.config.get("num_workers", 0)),
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(_mix(self.seed, epoch, self.run.dist.rank, 1)),
        )

    # -- running --------------------------------------------------------------------------------
    def fit(
        self,
        step: StepFn,
        *,
        on_epoch_start: Callable[[int], None] | None = None,
        evaluate: Callable[[int], Mapping[str, float] | None] | None = None,
        best: tuple[str, str] | None = None,
        best_modules: Sequence[str] | None = None,
        summary: Sequence[str] = ("loss",),
    ) -> dict[str, Any]:
        """Train to ``config.epochs``, resuming from ``last.pt`` when the run was started with --resume.

        Args:
            step: ``step(batch, position) -> values``: one optimisation step on this rank's
                batch; returns scalars to log.
            on_epoch_start: called with the 0-based epoch after the modules are set to train().
            evaluate: called with the 0-based epoch on every rank at the end of each epoch;
                returns metrics (or None when it skips that epoch).
            best: ``(metric, "min"|"max")``: the evaluation metric that picks ``best.pt``.
                Without `evaluate`, ``best.pt`` is simply the last epoch's weights.
            best_modules: the modules ``best.pt`` holds (default: all).
            summary: step values shown on the progress bar and returned as ``train_<key>``.

        Returns the last epoch's metrics plus ``best_<metric>``.
        """
        if not self.trained:
            raise RunError("the training loop has no module to train.")
        epochs = int(self.config["epochs"])
        tracker = BestTracker(*best) if best else None
        metrics: dict[str, Any] = self._resume(tracker)
        last_values: Mapping[str, float] = {}
        log_every = max(1, int(self.config.get("log_every", 10)))
        checkpoint_every = int(self.config.get("checkpoint_every", 0) or 0)
        for epoch in range(self.epoch, epochs):
            self.epoch = epoch
            for trained in self.trained.values():
                trained.module.train()
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            loader = self._loader(epoch, self.iteration)
            with self.run.progress(len(loader), f"{self.desc} epoch {epoch + 1}/{epochs}") as bar:
                for batch in loader:
                    position = Position(epoch, self.iteration, self.step, self.iterations_per_epoch)
                    with global_batch.step_scope(self.seed, self.step, self.run.dist.rank, self.run.dist.world_size):
                        values = step(batch, position)
                    self.iteration += 1
                    self.step += 1
                    last_values = values
                    bar.update(**{k: values[k] for k in summary if k in values})
                    if self.step % log_every == 0:
                        first = next(iter(self.trained.values()))
                        self.run.log.log(self.step, {**values, "lr": first.lr}, epoch=epoch + 1)
                    if checkpoint_every and self.step % checkpoint_every == 0 and self.iteration < self.iterations_per_epoch:
                        self.save_last(tracker, metrics)
            self.epoch, self.iteration = epoch + 1, 0
            metrics = {"epoch": epoch + 1, "step": self.step}
            metrics.update({f"train_{k}": float(last_values[k]) for k in summary if k in last_values})
            improved = False
            if evaluate is not None:
                evaluation = evaluate(epoch)
                if evaluation:
                    metrics.update(evaluation)
                    if tracker is not None and tracker.metric in evaluation:
                        improved = tracker.update(evaluation[tracker.metric])
            self.save_last(tracker, metrics)
            if improved or evaluate is None:
                self._save_best(tracker, metrics, best_modules)
        if tracker is not None and tracker.best is not None:
            metrics[f"best_{tracker.metric}"] = tracker.best
        return metrics

    # -- checkpoints ----------------------------------------------------------------------------
    def _modules(self, names: Sequence[str] | None = None) -> dict[str, torch.nn.Module]:
        return {name: t.module for name, t in self.trained.items() if names is None or name in names}

    def _extra(self, tracker: BestTracker | None, metrics: Mapping[str, Any], replicas: Any = None) -> dict[str, Any]:
        return {
            **self.extra,
            "iteration": self.iteration,
            "world_size": self.run.dist.world_size,
            "best": tracker.best if tracker is not None else None,
            "best_metric": tracker.metric if tracker is not None else None,
            "metrics": dict(metrics),
            "replicas": replicas,
        }

    def save_last(self, tracker: BestTracker | None, metrics: Mapping[str, Any]) -> None:
        """Write ``last.pt`` (every rank takes part; rank 0 writes)."""
        run = self.run
        if self.zero:
            for trained in self.trained.values():
                trained.optimizer.consolidate_state_dict(to=0)
        replicas = None
        if run.dist.is_distributed:
            replicas = distributed.check_replicas(
                {name: (t.module, not t.broadcast_buffers) for name, t in self.trained.items()}, run.dist
            )
        rng = distributed.gather_objects(rng_state(), run.dist)
        if not run.dist.is_main:
            return
        save_checkpoint(
            run.checkpoints / "last.pt", task=run.recipe.task, recipe=run.recipe.text(), modules=self._modules(),
            optimizers={n: t.optimizer for n, t in self.trained.items()},
            schedulers={n: t.scheduler for n, t in self.trained.items()},
            scalers={n: t.scaler for n, t in self.trained.items()},
            epoch=self.epoch, step=self.step, extra=self._extra(tracker, metrics, replicas), rng=rng,
            previous=None if self.last_unreadable else run.checkpoints / "previous.pt",
        )
        self.last_unreadable = False
        plugins.notify("checkpoint_saved", run=run, path=run.checkpoints / "last.pt", epoch=self.epoch, step=self.step)

    def _save_best(self, tracker: BestTracker | None, metrics: Mapping[str, Any], names: Sequence[str] | None) -> None:
        if self.run.dist.is_main:
            save_checkpoint(
                self.run.checkpoints / "best.pt", task=self.run.recipe.task, recipe=self.run.recipe.text(),
                modules=self._modules(names), epoch=self.epoch, step=self.step, extra=self._extra(tracker, metrics),
            )
            plugins.notify("checkpoint_saved", run=self.run, path=self.run.checkpoints / "best.pt",
                           epoch=self.epoch, step=self.step)

    def _newest_readable(self) -> tuple[Path, dict[str, Any]] | None:
        """``last.pt`` and its content, or ``previous.pt`` when ``last.pt`` is missing or unreadable.

        Refuses (the error of ``last.pt``) when neither can be read; None when there is neither.
        """
        run = self.run
        last, previous = run.checkpoints / "last.pt", run.checkpoints / "previous.pt"
        if not last.is_file() and not previous.is_file():
            return None
        try:
            return last, read_checkpoint(last)
        except CheckpointError as error:
            if not previous.is_file():
                raise
            try:
                payload = read_checkpoint(previous)
            except CheckpointError:
                raise error from None
            reason = "is missing" if not last.is_file() else "cannot be read"
            run.say(f"warning: {last} {reason}; resuming from {previous}, the checkpoint written before it "
                    f"(step {int(payload['step'])}); the steps after it are trained again.")
            self.last_unreadable = last.is_file()
            return previous, payload

    def _resume(self, tracker: BestTracker | None) -> dict[str, Any]:
        """Restore ``last.pt`` (or ``previous.pt``) when resuming; returns the metrics it was saved with."""
        run = self.run
        if run.dist.is_main:  # an interrupted write leaves its temporary file behind
            remove_leftovers(run.checkpoints)
        found = self._newest_readable() if run.resume else None
        if found is None:
            return {}
        last, payload = found
        state = load_checkpoint(
            last, task=run.recipe.task, modules=self._modules(),
            optimizers={n: t.optimizer for n, t in self.trained.items()},
            schedulers={n: t.scheduler for n, t in self.trained.items()},
            scalers={n: t.scaler for n, t in self.trained.items()},
            rank=run.dist.rank, payload=payload,
        )
        extra = state["extra"]
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.iteration = int(extra.get("iteration", 0))
        saved_world = int(extra.get("world_size", 1))
        if saved_world != run.dist.world_size:
            # Same number of items seen, re-cut for the new job size; exact only for equal sizes.
            batch = int(self.config["batch_size"])
            self.iteration = min(self.iteration * batch * saved_world // (batch * run.dist.world_size), self.iterations_per_epoch)
            run.say(
                f"resuming a {saved_world}-process run with {run.dist.world_size} processes: training continues, "
                f"but not bit-identically to an uninterrupted run."
            )
        if tracker is not None:
            tracker.best = extra.get("best")
        self.extra.update({k: v for k, v in extra.items() if k not in LOOP_KEYS})
        where = f"epoch {self.epoch + 1}, iteration {self.iteration}" if self.iteration else f"epoch {self.epoch}"
        run.say(f"resumed from {last} at {where} (step {self.step})")
        return dict(extra.get("metrics") or {})
