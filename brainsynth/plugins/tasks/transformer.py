"""The ``transformer`` task: an autoregressive prior over token grids read in an ordering.

Modes: ``train`` (teacher-forced cross-entropy on pre-extracted token grids, or on volumes
tokenized on the fly by a frozen tokenizer), ``sample`` (new brains, decoded into NIfTI and PNG)
and ``likelihood`` (per-token log-likelihood maps in image space). A run saves, with the weights,
the ordering's permutation and the conditioning table's fitted normalisation, so sampling and
scoring read values exactly as training did.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F

from brainsynth.core import distributed
from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from brainsynth.core.errors import RunError
from brainsynth.core.runner import Run
from brainsynth.core.task import Section, Task
from brainsynth.core.training import (
    BestTracker,
    OptimizerConfig,
    autocast,
    build_optimizer,
    build_scheduler,
    grad_scaler,
)

from .prior_likelihood import LikelihoodConfig, write_likelihood_maps
from .prior_parts import PriorParts, build_prior_parts
from .prior_sampling import SampleConfig, write_samples
from .tokenizer_run import TokenizerSource


@dataclasses.dataclass
class TrainConfig:
    """The ``train`` recipe section."""

    epochs: int = 10
    batch_size: int = 2
    eval_every: int = 1
    """Validate every N epochs (when a val split exists)."""
    log_every: int = 10
    """Log training loss every N iterations."""
    num_workers: int = 0
    weighted: bool = False
    """Draw training subjects in proportion to the conditioning table's ``weight`` column."""
    missing: Literal["error", "drop"] = "error"
    """A subject without a conditioning row or value: stop with an error, or leave it out (listed)."""


class TransformerTask(Task):
    """Train an autoregressive prior on token grids; sample brains and likelihood maps from it."""

    sections = {
        "data": Section(kind="dataset", default="tokens", doc="token grids, or volumes with a tokenizer"),
        "tokenizer": Section(schema=TokenizerSource, doc="the trained tokenizer (decoding, tokens on the fly)"),
        "ordering": Section(kind="ordering", default="raster_scan"),
        "conditioning": Section(kind="conditioning", default="none"),
        "network": Section(kind="transformer", required=True, doc="the prior network"),
        "optimizer": Section(schema=OptimizerConfig),
        "train": Section(schema=TrainConfig),
        "sample": Section(schema=SampleConfig),
        "likelihood": Section(schema=LikelihoodConfig),
    }
    modes = ("train", "sample", "likelihood")

    def run(self, run: Run) -> dict[str, Any]:
        return getattr(self, run.mode)(run)

    # -- train ---------------------------------------------------------------------------------
    def train(self, run: Run) -> dict[str, Any]:
        recipe = run.recipe
        config = recipe["train"]
        parts = build_prior_parts(run, fit_split="train")
        network = parts.network
        generator = torch.Generator().manual_seed(recipe["seed"])
        train_set = parts.dataset("train")
        sampler = parts.sampler("train", train_set, generator, run.dist, recipe["seed"])
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=config["batch_size"],
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=len(train_set) >= config["batch_size"] * run.dist.world_size,
            num_workers=config["num_workers"],
            generator=generator,
        )
        if len(loader) == 0:
            raise RunError(f"data: the train split has no full batch of size {config['batch_size']}.")
        run.say(parts.describe())
        trained = distributed.wrap(network, run.dist)
        optimizer = build_optimizer(network.parameters(), recipe["optimizer"])
        scheduler = build_scheduler(optimizer, recipe["optimizer"], config["epochs"] * len(loader))
        scaler = grad_scaler(recipe["precision"], run.device)
        tracker = BestTracker("val_ce", "min")
        modules = {"network": network}
        start_epoch, step = 0, 0
        last = run.checkpoints / "last.pt"
        if run.resume and last.is_file():
            state = load_checkpoint(
                last, task=recipe.task, modules=modules, optimizers={"network": optimizer},
                schedulers={"network": scheduler}, scalers={"network": scaler},
            )
            start_epoch, step = state["epoch"], state["step"]
            tracker.best = state["extra"].get("best")
            generator.set_state(state["extra"]["data_rng"])
            run.say(f"resumed from {last} at epoch {start_epoch}")
        metrics: dict[str, Any] = {}
        for epoch in range(start_epoch, config["epochs"]):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            network.train()
            with run.progress(len(loader), f"prior epoch {epoch + 1}/{config['epochs']}") as bar:
                for batch in loader:
                    inputs, target, conditioning = parts.batch(batch, run.device)
                    with autocast(recipe["precision"], run.device):
                        logits = trained(inputs, conditioning)
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if recipe["optimizer"]["grad_clip"]:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(network.parameters(), recipe["optimizer"]["grad_clip"])
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    bar.update(loss=loss.item())
                    if step % config["log_every"] == 0:
                        run.log.log(step, {"ce": loss.item(), "lr": scheduler.get_last_lr()[0]}, epoch=epoch + 1)
            metrics = {"epoch": epoch + 1, "step": step, "train_ce": loss.item()}
            improved = False
            if "val" in parts.data.splits and (epoch + 1) % config["eval_every"] == 0:
                metrics["val_ce"] = distributed.all_reduce_mean(
                    {"val_ce": self.validate(run, parts)}, run.dist
                )["val_ce"]
                run.log.log(step, {"ce": metrics["val_ce"]}, split="val", epoch=epoch + 1)
                improved = tracker.update(metrics["val_ce"])
            if run.dist.is_main:
                extra = {"best": tracker.best, "data_rng": generator.get_state(), "metrics": metrics, **parts.saved_state()}
                save_checkpoint(
                    last, task=recipe.task, recipe=recipe.text(), modules=modules,
                    optimizers={"network": optimizer}, schedulers={"network": scheduler},
                    scalers={"network": scaler}, epoch=epoch + 1, step=step, extra=extra,
                )
                if improved or "val" not in parts.data.splits:
                    save_checkpoint(
                        run.checkpoints / "best.pt", task=recipe.task, recipe=recipe.text(), modules=modules,
                        epoch=epoch + 1, step=step, extra=extra,
                    )
        if tracker.best is not None:
            metrics["best_val_ce"] = tracker.best
        return metrics

    @torch.no_grad()
    def validate(self, run: Run, parts: PriorParts) -> float:
        """Mean per-token cross-entropy over this rank's share of the val split."""
        network = parts.network
        network.eval()
        dataset = parts.dataset("val")
        indices = list(range(run.dist.rank, len(dataset), run.dist.world_size))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=run.recipe["train"]["batch_size"]
        )
        total, count = 0.0, 0
        for batch in loader:
            inputs, target, conditioning = parts.batch(batch, run.device)
            logits = network(inputs, conditioning)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
            count += target.numel()
        return total / max(count, 1)

    # -- sample / likelihood -----------------------------------------------------------------------
    def _trained_parts(self, run: Run, checkpoint: str) -> PriorParts:
        """The prior as trained: ordering and conditioning mapping from the checkpoint, then weights."""
        path = run.checkpoints / f"{checkpoint}.pt"
        if not path.is_file():
            raise RunError(f"{path}: no '{checkpoint}' checkpoint in this run; train it first (--mode train).")
        saved = read_checkpoint(path)
        if saved.get("task") != run.recipe.task:
            raise RunError(f"{path}: a '{saved.get('task')}' checkpoint, not a transformer's.")
        parts = build_prior_parts(run, saved=saved["extra"])
        load_checkpoint(path, task=run.recipe.task, modules={"network": parts.network}, restore_rng=False)
        parts.network.eval()
        return parts

    def sample(self, run: Run) -> dict[str, Any]:
        config = run.recipe["sample"]
        parts = self._trained_parts(run, config["checkpoint"])
        return write_samples(run, parts, config)

    def likelihood(self, run: Run) -> dict[str, Any]:
        config = run.recipe["likelihood"]
        parts = self._trained_parts(run, config["checkpoint"])
        return write_likelihood_maps(run, parts, config)

    def dry_run(self, recipe, registry):
        """The prior (and its frozen tokenizer) sized on the meta device, with the token grid."""
        from .dry_run import transformer_dry_run

        return transformer_dry_run(recipe, registry)
