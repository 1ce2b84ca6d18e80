"""``import-checkpoint`` for priors: an original performer/xtransformer checkpoint -> a prior run.

The prior is built exactly as the recipe's run modes build it (`build_prior_parts`): the token
grid and vocabulary from the imported tokenizer run (``tokenizer.run``), the ordering from the
recipe, and the conditioning mapping fitted on the training subjects of ``conditioning.table``
as training fits it (with ``normalize: none`` that mapping is the identity, which is what the
original fed). The original tensors are then handed to the network's own
``load_original_state_dict`` (strict, or a `CheckpointError` naming the key), and the checkpoint
is written with what prior training saves besides the weights (ordering permutation, fitted
conditioning mapping, grid and vocabulary), so ``--mode sample``, ``likelihood`` and
``evaluate`` read it like a trained run's ``best.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainsynth.core.checkpoint import save_checkpoint
from brainsynth.core.distributed import DistributedContext
from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.core.prior import as_variables
from brainsynth.core.recipe import Recipe
from brainsynth.core.registry import Registry
from brainsynth.core.runner import Run, run_directory, seed_everything
from brainsynth.library.original_weights import strip_ddp_prefix
from brainsynth.library.prior_assembly import PriorParts, build_prior_parts

from .original_checkpoint import OriginalCheckpoint

OUR_NETWORK = {"performer": "performer", "xtransformer": "original_xtransformer"}
"""The brainsynth network that takes the weights of each original network."""


def importing_networks(registry: Registry) -> list[str]:
    """The registered prior networks that can take original weights (they have ``load_original_state_dict``)."""
    return [
        name for name in registry.names("prior")
        if callable(getattr(registry.get("prior", name).factory, "load_original_state_dict", None))
    ]


def check_prior_recipe(source: OriginalCheckpoint, kind: str, recipe: Recipe, registry: Registry) -> None:
    """The recipe must build the network that takes this file's weights, fed as the original fed it."""
    ours = OUR_NETWORK[kind]
    name = (recipe.get("network") or {}).get("name")
    able = importing_networks(registry)
    if name not in able:
        which = "; ".join(f"{OUR_NETWORK[k]} (original {k} checkpoints)" for k in OUR_NETWORK if OUR_NETWORK[k] in able)
        raise CheckpointError(
            f"{source.path}: network '{name}' cannot take original weights; the networks that can: "
            f"{which or 'none is installed'}. This is an original {kind} checkpoint: set network.name: {ours} "
            f"('brainsynth import-script' of its run_transformer.py script writes that recipe)."
        )
    if name != ours:
        raise CheckpointError(
            f"{source.path}: an original {kind} checkpoint imports into network '{ours}', not '{name}' "
            f"('brainsynth import-script' of its run_transformer.py script writes that recipe)."
        )
    block = recipe["conditioning"]
    if block["name"] == "none":
        return
    where = f"{recipe.source}: conditioning"
    if block["name"] == "prepend" and block.get("order") != "last_first":  # elsewhere the order only changes rounding
        raise RecipeError(
            f"{where}.order: the original prepended each variable's vector in front of the last, so the last comes "
            f"first; an imported prior needs order: last_first (got {block.get('order', 'listed')!r})."
        )
    for variable in as_variables(block.get("variables")):
        if variable.kind == "continuous":
            if block.get("continuous_embedding") != "tiled":
                raise RecipeError(
                    f"{where}.continuous_embedding: the original tiled each raw value over the model width with no "
                    f"learnt projection; an imported prior needs continuous_embedding: tiled."
                )
            if variable.normalize != "none" or variable.equalize:
                raise RecipeError(
                    f"{where}.variables '{variable.column}': the original fed the table's values as stored; an imported "
                    f"prior needs normalize: none (and no equalize), or its outputs would differ from the original's."
                )


def _check_categorical_levels(parts: PriorParts, source: OriginalCheckpoint) -> None:
    """The original used a categorical value itself as the embedding row; ours maps sorted levels to rows."""
    if parts.table is None or not parts.conditioned:
        return
    for mapping in parts.table.mappings:
        levels = mapping.levels
        if levels is None:
            continue
        if not all(_equals_number(level, i) for i, level in enumerate(levels)):
            shown = ", ".join(map(str, levels[:6]))
            raise CheckpointError(
                f"{source.path}: categorical variable '{mapping.column}' has training values {shown}; the original "
                f"used each value as its embedding row, so they must be 0..count-1 for the weights to mean the same."
            )


def _equals_number(value: Any, number: int) -> bool:
    try:
        return float(value) == number
    except (TypeError, ValueError):
        return False


def build_imported_prior(
    source: OriginalCheckpoint, kind: str, recipe: Recipe, registry: Registry
) -> tuple[PriorParts, dict[str, Any]]:
    """Build the prior as training would, load the original tensors; returns it and the checkpoint's extra."""
    check_prior_recipe(source, kind, recipe, registry)
    seed_everything(int(recipe["seed"]))  # initial weights are overwritten; the seed only makes the build repeatable
    run = Run(recipe=recipe, directory=run_directory(recipe), registry=registry, dist=DistributedContext())
    parts = build_prior_parts(run, fit_split="train")
    _check_categorical_levels(parts, source)
    state = {strip_ddp_prefix(key): value for key, value in source.state.items()}
    parts.network.load_original_state_dict(state)
    parts.network.eval()
    extra = {
        **parts.saved_state(),
        "imported": {
            "source": str(Path(source.path).resolve()),
            "network": kind,
            "form": source.form,
            "ddp_prefix": any(k.startswith("module.") for k in source.state),
            "skipped_entries": source.other_entries,
            "allowed_globals": source.allowed_globals,
            "tokenizer_run": str(parts.tokenizer_source) if parts.tokenizer_source is not None else None,
        },
    }
    return parts, extra


def save_prior(path: Path, recipe: Recipe, parts: PriorParts, extra: dict[str, Any]) -> Path:
    """Write the imported prior as prior training writes ``best.pt`` (atomically)."""
    return save_checkpoint(path, task=recipe.task, recipe=recipe.text(), modules={"network": parts.network}, extra=extra)
