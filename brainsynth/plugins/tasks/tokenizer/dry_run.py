"""``--dry-run`` and ``validate`` for the tokenizer: its models sized without data or weights.

The token grid is derived, never assumed: from the tokenizer's down-sampling levels applied to
the data ROI.
"""

from __future__ import annotations

from brainsynth.core.dry_run import DryRun, DryRunModel, build_without_weights, parameter_count
from brainsynth.core.errors import RecipeError
from brainsynth.core.recipe import Recipe
from brainsynth.core.registry import Registry
from brainsynth.library.token_grid import roi_size, shape_text


def check_roi(recipe: Recipe, registry: Registry) -> None:
    """A RecipeError (at data.roi's line) when the ROI does not survive the network's down- and up-sampling."""
    size = roi_size(recipe["data"])
    if size is None:
        return
    network = build_without_weights(lambda: registry.build("tokenizer", recipe["network"]))
    grid = tuple(network.token_grid(size))
    if min(grid) >= 1 and tuple(network.output_shape(grid)) == size:
        return
    factor = getattr(network, "downsampling", None)
    where = recipe.origins(("data", "roi"))
    if factor:
        nearest = tuple(max(factor, round(s / factor) * factor) for s in size)
        bad = ", ".join(f"{s} on axis {axis}" for axis, s in enumerate(size) if s % factor)
        raise RecipeError(
            f"{where}: data.roi: {shape_text(size)} is not divisible by the network's total down-sampling {factor} "
            f"({bad or 'too small'}); use a multiple of {factor} on every axis, e.g. {shape_text(nearest)}."
        )
    raise RecipeError(
        f"{where}: data.roi: {shape_text(size)} does not survive the network's down-sampling (tokens "
        f"{shape_text(grid)} decode to {shape_text(network.output_shape(grid))}); choose a ROI the levels divide exactly."
    )


def tokenizer_dry_run(recipe: Recipe, registry: Registry) -> DryRun:
    """The VQ-VAE (and its discriminator when adversarial training is on) and the token grid."""
    network = build_without_weights(lambda: registry.build("tokenizer", recipe["network"]))
    codebook = f"codebook {network.num_embeddings} x {network.codebook.embedding_dim}"
    models = [DryRunModel("network", recipe["network"]["name"], parameter_count(network), detail=codebook)]
    if recipe["adversarial"]["weight"] > 0 and recipe["discriminator"] is not None:
        discriminator = build_without_weights(lambda: registry.build("discriminator", recipe["discriminator"]))
        models.append(DryRunModel("discriminator", recipe["discriminator"]["name"], parameter_count(discriminator)))
    facts, notes, grid = [], [], None
    size = roi_size(recipe["data"])
    if size is None:
        notes.append("data.roi is not set: the token grid follows each volume's own size.")
    else:
        grid = tuple(network.check_spatial_shape(size))
        facts.append(f"token grid from data.roi {shape_text(size)} through the network's down-sampling")
    return DryRun(models, grid, facts, notes)
