"""``--dry-run`` for the tokenizer and transformer tasks: their models sized without data or weights.

The token grid is derived, never assumed: from the tokenizer's down-sampling levels applied to
the data ROI. A prior learns both from its tokenizer: the recipe file named by
``tokenizer.recipe`` (so a prior can be sized before its tokenizer is trained), else the trained
run's saved ``recipe.yaml``, else the token grids its data already holds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from brainsynth.library.conditioning_table import ConditioningTable
from brainsynth.core.dry_run import DryRun, DryRunModel, build_without_weights, parameter_count
from brainsynth.core.errors import BrainsynthError, RecipeError
from brainsynth.core.prior import as_variables
from brainsynth.core.recipe import Recipe, load_recipe, recipe_from_text
from brainsynth.core.registry import Registry
from brainsynth.library.volume_transforms import transform_settings


def roi_size(data: dict[str, Any] | None) -> tuple[int, ...] | None:
    """The spatial size every volume is cropped/padded to (``data.roi``), or None."""
    roi = (data or {}).get("roi")
    if roi is None:
        return None
    return tuple(int(s) for s in transform_settings(roi=roi).roi.size)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# -- tokenizer ----------------------------------------------------------------------------------
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
            f"{where}: data.roi: {_shape(size)} is not divisible by the network's total down-sampling {factor} "
            f"({bad or 'too small'}); use a multiple of {factor} on every axis, e.g. {_shape(nearest)}."
        )
    raise RecipeError(
        f"{where}: data.roi: {_shape(size)} does not survive the network's down-sampling (tokens "
        f"{_shape(grid)} decode to {_shape(network.output_shape(grid))}); choose a ROI the levels divide exactly."
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
        facts.append(f"token grid from data.roi {_shape(size)} through the network's down-sampling")
    return DryRun(models, grid, facts, notes)


# -- transformer --------------------------------------------------------------------------------
def _tokenizer_recipe(recipe: Recipe, registry: Registry) -> tuple[Recipe, str] | None:
    """The tokenizer's recipe: ``tokenizer.recipe``, else the saved one of ``tokenizer.run``."""
    source = recipe["tokenizer"]
    if source.get("recipe"):
        path = Path(source["recipe"])
        try:
            tokenizer = load_recipe(path, registry)
        except BrainsynthError as exc:
            raise RecipeError(f"{recipe.origins(('tokenizer', 'recipe'))}: tokenizer.recipe: {exc}") from None
        where = str(path)
    elif source.get("run") and (Path(source["run"]) / "recipe.yaml").is_file():
        path = Path(source["run"]) / "recipe.yaml"
        tokenizer = recipe_from_text(path.read_text(), registry, str(path))
        where = str(path)
    else:
        return None
    if tokenizer.task != "tokenizer":
        raise RecipeError(
            f"{recipe.origins(('tokenizer',))}: tokenizer: {where} is a '{tokenizer.task}' recipe; "
            "point tokenizer.recipe at the tokenizer's recipe file."
        )
    return tokenizer, where


def _categorical_levels(recipe: Recipe, variables, notes: list[str]) -> dict[str, int]:
    """Levels of categorical variables, read from the conditioning table when it is there."""
    categorical = [v for v in variables if v.kind == "categorical"]
    if not categorical:
        return {}
    table = recipe["conditioning"].get("table") or (recipe["data"] or {}).get("conditioning_table")
    if table and Path(table).is_file():
        return ConditioningTable.read(table, variables, None, missing="drop").num_levels
    width = recipe["conditioning"].get("dim") or recipe["network"].get("dim")
    notes.append(
        f"categorical {', '.join(v.column for v in categorical)}: the number of levels comes from the "
        f"conditioning table ({table or 'not set'}, not found), counted here as 1 level each; every "
        f"further level adds {width} parameters."
    )
    return {v.column: 1 for v in categorical}


def transformer_dry_run(recipe: Recipe, registry: Registry) -> DryRun:
    """The prior at its vocabulary and sequence length, and the frozen tokenizer it reads through."""
    facts, notes, models_after = [], [], []
    found = _tokenizer_recipe(recipe, registry)
    data = recipe["data"] or {}
    if found is not None:
        tokenizer_recipe, where = found
        tokenizer = build_without_weights(lambda: registry.build("tokenizer", tokenizer_recipe["network"]))
        num_embeddings = int(tokenizer.num_embeddings)
        if "roi" in data:  # volumes tokenized on the fly: the prior's own ROI decides the grid
            size = roi_size(data)
            if size is None:
                raise RecipeError(
                    f"{recipe.source}: data: tokens on the fly need every volume at one size; set data.roi."
                )
            origin = f"data.roi {_shape(size)}"
        else:
            size = roi_size(tokenizer_recipe["data"])
            if size is None:
                raise RecipeError(
                    f"{where}: data.roi is not set, so the token grid depends on each volume; set it "
                    "(the prior needs one grid)."
                )
            origin = f"the tokenizer's data.roi {_shape(size)}"
        grid = tuple(tokenizer.check_spatial_shape(size))
        facts.append(f"token grid from {origin} through the tokenizer of {where}")
        models_after.append(
            DryRunModel("tokenizer", tokenizer_recipe["network"]["name"], parameter_count(tokenizer), trained=False,
                        detail=f"from {where}")
        )
    else:
        try:
            source = registry.build("dataset", recipe["data"])
        except BrainsynthError as exc:
            raise RecipeError(
                f"{recipe.source}: --dry-run cannot tell the token grid: set tokenizer.recipe to the tokenizer's "
                f"recipe file (or tokenizer.run to a trained tokenizer run). Reading the data failed: {exc}"
            ) from None
        if getattr(source, "grid", None) is None:
            raise RecipeError(
                f"{recipe.source}: --dry-run cannot tell the token grid of volumes tokenized on the fly: set "
                "tokenizer.recipe to the tokenizer's recipe file (or tokenizer.run to a trained tokenizer run)."
            )
        num_embeddings, grid = int(source.num_embeddings), tuple(int(g) for g in source.grid)
        facts.append(f"token grid of the extracted token grids in {data.get('train')}")

    ordering = registry.build("ordering", recipe["ordering"], spatial_shape=grid)
    block = recipe["conditioning"]
    variables = as_variables(block.get("variables")) if block["name"] != "none" else []
    levels = _categorical_levels(recipe, variables, notes)
    conditioning = build_without_weights(
        lambda: registry.build("conditioning", block, model_dim=recipe["network"].get("dim"), num_levels=levels)
    )
    network = build_without_weights(
        lambda: registry.build(
            "prior", recipe["network"], num_tokens=num_embeddings + 1, max_seq_len=math.prod(grid),
            ordering=ordering, conditioning=conditioning,
        )
    )
    facts.append(
        f"sequence: {len(ordering)} tokens + BOS in {recipe['ordering']['name']} order, "
        f"vocabulary {num_embeddings} codes + BOS"
    )
    if variables:
        facts.append(
            f"conditioning: {block['name']} on {', '.join(v.column for v in variables)} "
            f"({conditioning.num_vectors} vectors of width {conditioning.dim})"
        )
    models = [DryRunModel("network", recipe["network"]["name"], parameter_count(network)), *models_after]
    return DryRun(models, grid, facts, notes)
