"""``--dry-run`` for the prior: the network sized without data or weights, through the runs' assembler.

The token grid is derived, never assumed: from the tokenizer's down-sampling levels applied to
the data ROI. A prior learns both from its tokenizer: the recipe file named by
``tokenizer.recipe`` (so a prior can be sized before its tokenizer is trained), else the trained
run's saved ``recipe.yaml``, else the token grids its data already holds. Ordering, conditioning
and network are then wired by `assemble_prior`, exactly as a run wires them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainsynth.core.dry_run import DryRun, DryRunModel, build_without_weights, parameter_count
from brainsynth.core.errors import BrainsynthError, RecipeError
from brainsynth.core.prior import as_variables
from brainsynth.core.recipe import Recipe, load_recipe, recipe_from_text
from brainsynth.core.registry import Registry
from brainsynth.library.prior_assembly import assemble_prior, conditioning_table_path, read_conditioning_table
from brainsynth.library.token_grid import roi_size, shape_text


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


def _categorical_levels(recipe: Recipe, variables, notes: list[str], source: Any = None) -> dict[str, int]:
    """Levels of categorical variables, from the conditioning table when it is there: fitted on the
    training subjects, as a run fits them, when the data (`source`, token grids) could be listed."""
    categorical = [v for v in variables if v.kind == "categorical"]
    if not categorical:
        return {}
    table = conditioning_table_path(recipe, source) or (recipe["data"] or {}).get("conditioning_table")
    if table and Path(table).is_file():
        subjects = [s.name for s in source.subjects("train")] if source is not None else None
        return read_conditioning_table(recipe, table, subjects).num_levels
    width = recipe["conditioning"].get("dim") or recipe["network"].get("dim")
    notes.append(
        f"categorical {', '.join(v.column for v in categorical)}: the number of levels comes from the "
        f"conditioning table ({table or 'not set'}, not found), counted here as 1 level each; every "
        f"further level adds {width} parameters."
    )
    return {v.column: 1 for v in categorical}


def prior_dry_run(recipe: Recipe, registry: Registry) -> DryRun:
    """The prior at its vocabulary and sequence length, and the frozen tokenizer it reads through."""
    facts, notes, models_after = [], [], []
    found = _tokenizer_recipe(recipe, registry)
    data = recipe["data"] or {}
    source = None
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
            origin = f"data.roi {shape_text(size)}"
        else:
            size = roi_size(tokenizer_recipe["data"])
            if size is None:
                raise RecipeError(
                    f"{where}: data.roi is not set, so the token grid depends on each volume; set it "
                    "(the prior needs one grid)."
                )
            origin = f"the tokenizer's data.roi {shape_text(size)}"
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

    block = recipe["conditioning"]
    variables = as_variables(block.get("variables")) if block["name"] != "none" else []
    levels = _categorical_levels(recipe, variables, notes, source)
    ordering, conditioning, network = assemble_prior(
        recipe, registry, num_embeddings=num_embeddings, grid=grid, num_levels=levels, build=build_without_weights
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
