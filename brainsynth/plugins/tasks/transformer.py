"""The ``prior`` task (``transformer`` in older recipes): an autoregressive prior over token grids read in an ordering.

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
from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint
from brainsynth.core.errors import RecipeError, RunError
from brainsynth.core.files import relative_inside
from brainsynth.core.loop import LoopConfig, Position, TrainingLoop, evaluation_due
from brainsynth.core.runner import Run
from brainsynth.core.schema import PositiveInt
from brainsynth.core.task import Section, Task

from .prior_evaluation import EvaluationConfig, write_evaluation
from .prior_likelihood import LikelihoodConfig, write_likelihood_maps
from .prior_parts import PriorParts, build_prior_parts
from .prior_sampling import SampleConfig, write_samples
from .tokenizer_run import TokenizerSource


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


class PriorTask(Task):
    """Train an autoregressive prior on token grids; sample brains and likelihood maps from it."""

    sections = {
        "data": Section(kind="dataset", default="tokens", doc="token grids, or volumes with a tokenizer"),
        "tokenizer": Section(schema=TokenizerSource, doc="the trained tokenizer (decoding, tokens on the fly)"),
        "ordering": Section(kind="ordering", default="raster_scan"),
        "conditioning": Section(kind="conditioning", default="none"),
        "network": Section(kind="prior", required=True, doc="the prior network"),
        "optimizer": Section(kind="optimizer", default="adam"),
        "train": Section(schema=TrainConfig),
        "sample": Section(schema=SampleConfig),
        "likelihood": Section(schema=LikelihoodConfig),
        "evaluation": Section(schema=EvaluationConfig),
    }
    modes = ("train", "sample", "likelihood", "evaluate")

    @classmethod
    def check_recipe(cls, recipe, registry) -> None:
        """Folders the modes write must stay inside the run directory; sampling asks only for what
        the prior's conditioning can give."""
        for key in (("sample", "output"), ("likelihood", "output"), ("evaluation", "samples")):
            relative_inside(recipe[key[0]][key[1]], ".".join(key), recipe.origins(key))
        sample, conditioning = recipe["sample"], recipe["conditioning"]
        unconditioned = conditioning["name"] == "none" or not conditioning.get("variables")
        given = [key for key in ("values", "grid", "fixed", "split") if sample[key] is not None]
        if unconditioned and given:
            raise RecipeError(
                f"{recipe.origins(('sample', given[0]))}: sample.{given[0]}: this prior is not conditioned on any "
                f"variable, so there is nothing to set; remove sample.{given[0]} or add conditioning.variables."
            )
        guidance = sample["guidance_scale"]
        if guidance != 1 and (unconditioned or conditioning.get("dropout") == 0):
            why = "is not conditioned" if unconditioned else "is trained without conditioning.dropout (no null branch)"
            raise RecipeError(
                f"{recipe.origins(('sample', 'guidance_scale'))}: sample.guidance_scale {guidance}: this prior {why}, "
                "so there is nothing to guide; use 1, or train with conditioning.dropout > 0."
            )

    def run(self, run: Run) -> dict[str, Any]:
        return getattr(self, run.mode)(run)

    # -- train ---------------------------------------------------------------------------------
    def train(self, run: Run) -> dict[str, Any]:
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
            value = distributed.all_reduce_mean({"val_ce": self.validate(run, parts)}, run.dist)["val_ce"]
            run.log.log(loop.step, {"ce": value}, split="val", epoch=epoch + 1)
            return {"val_ce": value}

        return loop.fit(
            step, evaluate=evaluate if "val" in parts.data.splits else None, best=("val_ce", "min"), summary=("ce",)
        )

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
            raise RunError(f"{path}: a '{saved.get('task')}' checkpoint, not a prior's.")
        parts = build_prior_parts(run, saved=saved["extra"])
        load_checkpoint(path, task=run.recipe.task, modules={"network": parts.network}, restore_rng=False, payload=saved)
        parts.network.eval()
        return parts

    def sample(self, run: Run) -> dict[str, Any]:
        config = run.recipe["sample"]
        parts = self._trained_parts(run, config["checkpoint"])
        return write_samples(run, parts, config)

    def evaluate(self, run: Run) -> dict[str, Any]:
        config = run.recipe["evaluation"]
        parts = self._trained_parts(run, run.recipe["sample"]["checkpoint"])
        return write_evaluation(run, parts, config)

    def likelihood(self, run: Run) -> dict[str, Any]:
        config = run.recipe["likelihood"]
        parts = self._trained_parts(run, config["checkpoint"])
        return write_likelihood_maps(run, parts, config)

    def load(self, directory, recipe, registry, *, checkpoint, device):
        """A `LoadedPrior` (with its `LoadedTokenizer`): sample and score in Python (`brainsynth.load`)."""
        from .loaded import LoadedPrior, LoadedTokenizer

        run = Run(recipe=recipe, directory=directory, registry=registry, dist=distributed.DistributedContext(device=device))
        parts = self._trained_parts(run, checkpoint)
        return LoadedPrior(parts, LoadedTokenizer(parts.tokenizer, registry, device), device)

    def dry_run(self, recipe, registry):
        """The prior (and its frozen tokenizer) sized on the meta device, with the token grid."""
        from .dry_run import transformer_dry_run

        return transformer_dry_run(recipe, registry)
