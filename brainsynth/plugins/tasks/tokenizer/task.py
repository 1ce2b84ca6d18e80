"""The ``tokenizer`` task: train a VQ-VAE, extract token grids, decode them, evaluate reconstructions.

This module holds the recipe's sections and the checks across them; each mode is a module of
this package (`train`, `extract`, `decode`, `evaluate`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Literal

from brainsynth.core.errors import RecipeError
from brainsynth.core.runner import Run
from brainsynth.core.schema import NonNegativeFloat, NonNegativeInt, PositiveInt
from brainsynth.core.task import Section, Task
from brainsynth.core.loop import LoopConfig

from .evaluate import DEFAULT_METRICS


@dataclasses.dataclass
class TokenizerTrainConfig(LoopConfig):
    """The ``train`` section of a tokenizer recipe (epochs, batch_size, num_workers, log_every and
    checkpoint_every are the shared loop's)."""

    eval_every: PositiveInt = 1
    """Evaluate on the val split every N epochs."""
    image_every: PositiveInt = 1
    """Log mid-slice images every N evaluations."""
    best_metric: str = "ms_ssim"
    """The evaluation metric that picks ``best.pt`` (maximised or minimised as the metric says)."""


@dataclasses.dataclass
class AdversarialConfig:
    """The ``adversarial`` section: weight and schedule of the generator's adversarial term."""

    weight: NonNegativeFloat = 0.0
    """0 switches adversarial training off."""
    warmup_epochs: NonNegativeInt = 0
    """Epochs over which the weight ramps linearly from 0 to `weight` (0: no ramp)."""
    start_epoch: NonNegativeInt = 0
    """Epochs of reconstruction-only training before the adversarial term starts."""
    adaptive: bool = False
    """Scale by VQGAN's adaptive weight (ratio of gradient norms at the decoder's last layer)."""


@dataclasses.dataclass
class OutputsConfig:
    """Where extract, decode and evaluate read from and write to."""

    checkpoint: Literal["best", "last"] = "best"
    splits: list[str] | None = None
    """Splits to extract or evaluate (default: every split of the data)."""
    reconstructions: bool = False
    """extract: also write reconstructions as NIfTI."""
    tokens: str | None = None
    """decode: a folder of ``.npy`` token grids (default: the run's ``tokens/`` folder)."""


class TokenizerTask(Task):
    """Train a VQ-VAE tokenizer; extract, decode and evaluate with it."""

    sections = {
        "data": Section(kind="dataset", default="nifti", doc="volumes"),
        "network": Section(kind="tokenizer", required=True, doc="the VQ-VAE"),
        "loss": Section(kind="loss", default="jukebox_perceptual"),
        "discriminator": Section(kind="discriminator", doc="set with adversarial.weight > 0"),
        "adversarial_loss": Section(kind="adversarial_loss", default="least_square"),
        "adversarial": Section(schema=AdversarialConfig),
        "metrics": Section(kind="metric", many=True),
        "optimizer": Section(kind="optimizer", default="adam"),
        "discriminator_optimizer": Section(kind="optimizer", default="adam"),
        "train": Section(schema=TokenizerTrainConfig),
        "outputs": Section(schema=OutputsConfig),
    }
    modes = ("train", "extract", "decode", "evaluate")

    def run(self, run: Run) -> dict[str, Any]:
        """Each mode is the module of this package named after it (its `run_mode`), imported when it runs."""
        return importlib.import_module(f"{__package__}.{run.mode}").run_mode(run)

    def load(self, directory, recipe, registry, *, checkpoint, device):
        """A `LoadedTokenizer`: encode and decode in Python (`brainsynth.load`)."""
        from brainsynth.library.trained_tokenizer import load_trained_tokenizer

        return load_trained_tokenizer(directory, recipe, registry, checkpoint, device)

    @classmethod
    def check_recipe(cls, recipe, registry) -> None:
        """validate: rules across sections, and data.roi must survive the network's down-sampling
        (and up-sampling) exactly."""
        from .dry_run import check_roi

        if recipe["adversarial"]["weight"] > 0 and recipe["discriminator"] is None:
            raise RecipeError(
                f"{recipe.origins(('adversarial', 'weight'))}: adversarial.weight > 0 needs a discriminator block "
                "(e.g. discriminator: {name: baseline_discriminator}), or set adversarial.weight: 0."
            )
        metrics = [block["name"] for block in recipe["metrics"]] or list(DEFAULT_METRICS)
        if recipe["train"]["best_metric"] not in metrics:
            raise RecipeError(
                f"{recipe.origins(('train', 'best_metric'))}: train.best_metric: '{recipe['train']['best_metric']}' "
                f"is not among the metrics ({', '.join(metrics)}); name one of them or add it to metrics."
            )
        check_roi(recipe, registry)

    def dry_run(self, recipe, registry):
        """The VQ-VAE (and discriminator) sized on the meta device, and the token grid of data.roi."""
        from .dry_run import tokenizer_dry_run

        return tokenizer_dry_run(recipe, registry)
