"""The ``prior`` task (``transformer`` in older recipes): an autoregressive prior over token grids read in an ordering.

Modes, one module each: ``train`` (teacher-forced cross-entropy on pre-extracted token grids, or
on volumes tokenized on the fly by a frozen tokenizer), ``sample`` (new brains, decoded into NIfTI
and PNG), ``likelihood`` (per-token log-likelihood maps in image space) and ``evaluate`` (the
samples against real brains). Every mode and ``--dry-run`` build the prior through one assembler,
`brainsynth.library.prior_assembly`. A run saves, with the weights,
the ordering's permutation and the conditioning table's fitted normalisation, so sampling and
scoring read values exactly as training did.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Literal

from brainsynth.core import distributed
from brainsynth.core.errors import RecipeError
from brainsynth.core.files import relative_inside
from brainsynth.core.runner import Run
from brainsynth.core.task import Section, Task

from .evaluate import EvaluationConfig
from .likelihood import LikelihoodConfig
from .sample import SampleConfig
from .train import TrainConfig


@dataclasses.dataclass
class TokenizerSource:
    """The ``tokenizer`` section of a prior's recipe: which trained tokenizer to use."""

    run: str | None = None
    """A tokenizer run directory. Default: the run that extracted the token grids (tokens.json)."""
    checkpoint: Literal["best", "last"] = "best"
    recipe: str | None = None
    """The tokenizer's recipe file. Only ``run --dry-run`` reads it: it sizes the prior (token grid,
    vocabulary) before the tokenizer run exists. A relative path starts at the working directory."""


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
        """Each mode is the module of this package named after it (its `run_mode`), imported when it runs."""
        return importlib.import_module(f"{__package__}.{run.mode}").run_mode(run)

    def load(self, directory, recipe, registry, *, checkpoint, device):
        """A `LoadedPrior` (with its `LoadedTokenizer`): sample and score in Python (`brainsynth.load`)."""
        from brainsynth.library.trained_tokenizer import LoadedTokenizer

        from .loaded import LoadedPrior
        from .trained import trained_prior

        run = Run(recipe=recipe, directory=directory, registry=registry, dist=distributed.DistributedContext(device=device))
        parts = trained_prior(run, checkpoint)
        return LoadedPrior(parts, LoadedTokenizer(parts.tokenizer, registry, device), device)

    def dry_run(self, recipe, registry):
        """The prior (and its frozen tokenizer) sized on the meta device, with the token grid."""
        from .dry_run import prior_dry_run

        return prior_dry_run(recipe, registry)
