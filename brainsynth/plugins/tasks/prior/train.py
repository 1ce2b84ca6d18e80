"""``train``: teacher-forced cross-entropy on the shared loop; validation cross-entropy picks ``best.pt``."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F

from brainsynth.core import distributed
from brainsynth.core.errors import RecipeError
from brainsynth.core.loop import LoopConfig, Position, TrainingLoop, evaluation_due
from brainsynth.core.runner import Run
from brainsynth.core.schema import PositiveInt
from brainsynth.library.prior_assembly import PriorParts, build_prior_parts


@dataclasses.dataclass
class TrainConfig(LoopConfig):
    """The ``train`` recipe section (epochs, batch_size, log_every, checkpoint_every: see `LoopConfig`)."""

    batch_size: PositiveInt = 2
    eval_every: PositiveInt = 1
    """Validate every N epochs (when a val split exists)."""
    weighted: bool = False
    """Draw training subjects in proportion to the conditioning table's ``weight`` column."""
    missing: Literal["error", "drop"] = "error"
    """A subject without a conditioning row or value: stop with an error, or leave it out (listed)."""


def run_mode(run: Run) -> dict[str, Any]:
    """Teacher-forced cross-entropy on the shared loop; validation CE picks ``best.pt``."""
    config = run.recipe["train"]
    if config["eval_every"] < 1:
        raise RecipeError(f"{run.recipe.origins(('train', 'eval_every'))}: train.eval_every must be at least 1.")
    parts = build_prior_parts(run, fit_split="train")
    train_set = parts.dataset("train")
    weights = parts.weights("train", train_set) if config["weighted"] else None
    loop = TrainingLoop(run, train_set, config, weights=weights, desc="prior")
    prior = loop.add("network", parts.network, run.recipe["optimizer"])
    loop.extra.update(parts.saved_state())
    run.say(parts.describe())

    def step(batch: dict[str, Any], position: Position) -> dict[str, float]:
        inputs, target, conditioning = parts.batch(batch, run.device)
        with loop.autocast():
            logits = prior.model(inputs, conditioning)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
        prior.update(loss)
        return {"ce": loss.item()}

    def evaluate(epoch: int) -> dict[str, float] | None:
        if not evaluation_due(epoch, config["eval_every"], config["epochs"]):
            return None
        value = distributed.all_reduce_mean({"val_ce": validate(run, parts)}, run.dist)["val_ce"]
        run.log.log(loop.step, {"ce": value}, split="val", epoch=epoch + 1)
        return {"val_ce": value}

    return loop.fit(
        step, evaluate=evaluate if "val" in parts.data.splits else None, best=("val_ce", "min"), summary=("ce",)
    )


@torch.no_grad()
def validate(run: Run, parts: PriorParts) -> float:
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
