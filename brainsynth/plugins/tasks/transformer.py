"""The ``transformer`` task: an autoregressive prior over token grids read in an ordering."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from brainsynth.core import distributed
from brainsynth.core.checkpoint import load_checkpoint, save_checkpoint
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


def _sequences(ordering: Any, tokens: torch.Tensor, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (BOS + all tokens but the last) and targets (all tokens), both [B, L]."""
    target = ordering.sequence(tokens)
    bos_column = torch.full((target.shape[0], 1), bos, dtype=target.dtype, device=target.device)
    return torch.cat([bos_column, target[:, :-1]], dim=1), target


class TransformerTask(Task):
    """Train an autoregressive prior on pre-extracted token grids."""

    sections = {
        "data": Section(kind="dataset", default="tokens", doc="token grids"),
        "ordering": Section(kind="ordering", default="raster_scan"),
        "network": Section(kind="transformer", required=True, doc="the prior network"),
        "optimizer": Section(schema=OptimizerConfig),
        "train": Section(schema=TrainConfig),
    }
    modes = ("train",)

    def run(self, run: Run) -> dict[str, Any]:
        return self.train(run)

    def build(self, run: Run):
        data = run.build("data")
        ordering = run.build("ordering", spatial_shape=data.grid)
        length = len(ordering.sequence(torch.zeros((1, *data.grid), dtype=torch.long))[0])
        network = run.build("network", num_tokens=data.num_embeddings + 1, max_seq_len=length, ordering=ordering)
        return data, ordering, network.to(run.device)

    def train(self, run: Run) -> dict[str, Any]:
        recipe = run.recipe
        config = recipe["train"]
        data, ordering, network = self.build(run)
        bos = data.num_embeddings
        generator = torch.Generator().manual_seed(recipe["seed"])
        train_set = data.split("train", train=True)
        sampler = None
        if run.dist.is_distributed:
            sampler = torch.utils.data.DistributedSampler(
                train_set, num_replicas=run.dist.world_size, rank=run.dist.rank, shuffle=True, seed=recipe["seed"]
            )
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
            if sampler is not None:
                sampler.set_epoch(epoch)
            network.train()
            with run.progress(len(loader), f"epoch {epoch + 1}/{config['epochs']}") as bar:
                for batch in loader:
                    inputs, target = _sequences(ordering, batch["tokens"].to(run.device), bos)
                    with autocast(recipe["precision"], run.device):
                        logits = trained(inputs)
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
            if "val" in data.splits and (epoch + 1) % config["eval_every"] == 0:
                metrics["val_ce"] = distributed.all_reduce_mean(
                    {"val_ce": self.validate(run, data, ordering, network)}, run.dist
                )["val_ce"]
                run.log.log(step, {"ce": metrics["val_ce"]}, split="val", epoch=epoch + 1)
                improved = tracker.update(metrics["val_ce"])
            if run.dist.is_main:
                extra = {"best": tracker.best, "data_rng": generator.get_state(), "metrics": metrics}
                save_checkpoint(
                    last, task=recipe.task, recipe=recipe.text(), modules=modules,
                    optimizers={"network": optimizer}, schedulers={"network": scheduler},
                    scalers={"network": scaler}, epoch=epoch + 1, step=step, extra=extra,
                )
                if improved:
                    save_checkpoint(
                        run.checkpoints / "best.pt", task=recipe.task, recipe=recipe.text(), modules=modules,
                        epoch=epoch + 1, step=step, extra=extra,
                    )
        if tracker.best is not None:
            metrics["best_val_ce"] = tracker.best
        return metrics

    @torch.no_grad()
    def validate(self, run: Run, data, ordering, network) -> float:
        network.eval()
        total, count = 0.0, 0
        loader = torch.utils.data.DataLoader(data.split("val"), batch_size=run.recipe["train"]["batch_size"])
        for batch in loader:
            inputs, target = _sequences(ordering, batch["tokens"].to(run.device), data.num_embeddings)
            logits = network(inputs)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
            count += target.numel()
        return total / max(count, 1)
