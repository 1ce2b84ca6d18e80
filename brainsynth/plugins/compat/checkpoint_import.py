"""``import-checkpoint``: an original checkpoint -> a brainsynth checkpoint and/or run directory.

The file's keys say which original network it holds; the recipe must be the matching kind (a
tokenizer recipe for ``baseline_vqvae``, a prior recipe for ``performer``/``xtransformer``,
which `prior_import` builds), or one line says which recipe is needed. For the tokenizer, the network is built from the user's tokenizer recipe, the original tensors are renamed onto it
(`original_weights.map_original_state_dict`: every key consumed, every shape checked), and a
brainsynth checkpoint is written atomically. Besides the weights, extract/decode/sample need the
space the tokenizer works in (volume shape and affine); it is read from the first training
volume of the recipe's data, as training would record it, or from ``data.roi`` when no volume is
readable. With ``run=True`` a run directory (``recipe.yaml`` + ``checkpoints/best.pt``) is
created, so ``brainsynth run RECIPE --mode extract`` works at once; it is assembled in a hidden
folder and renamed into place, so a failure leaves nothing behind and an existing run is never
touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from brainsynth.core.checkpoint import save_checkpoint
from brainsynth.core.errors import BrainsynthError, CheckpointError, RecipeError, RunError
from brainsynth.core.kinds import canonical
from brainsynth.core.recipe import Recipe
from brainsynth.core.registry import Registry
from brainsynth.core.runner import run_directory
from brainsynth.library.original_weights import map_original_state_dict, strip_ddp_prefix

from .original_checkpoint import OriginalCheckpoint, load_original, original_kind
from .prior_import import OUR_NETWORK, build_imported_prior


@dataclasses.dataclass
class ImportReport:
    """What was imported and where it went (the CLI prints it)."""

    source: OriginalCheckpoint
    kind: str
    """The original network: baseline_vqvae, performer or xtransformer."""
    written: list[Path]
    note: str
    """Where the tokenizer's volume space came from, or what the imported prior reads."""
    parameters: int


def import_checkpoint(
    original: str | Path,
    recipe: Recipe,
    registry: Registry,
    out: str | Path | None = None,
    run: bool = False,
    say: Callable[[str], None] = print,
) -> ImportReport:
    """Import `original` for `recipe`'s network; write `out` and/or a run directory. Nothing half-way."""
    if out is None and not run:
        raise RecipeError("import-checkpoint: give OUT.pt, --run, or both (where the imported checkpoint goes).")
    out_path = Path(out) if out is not None else None
    run_dir = run_directory(recipe) if run else None
    if out_path is not None and out_path.exists():
        raise CheckpointError(f"{out_path}: already exists; brainsynth never overwrites a checkpoint. Choose another OUT.pt.")
    if run_dir is not None and run_dir.exists():
        raise RunError(
            f"run directory {run_dir} already exists; an imported checkpoint never overwrites a run. "
            f"Choose another name with --set experiment.name=NAME."
        )
    source = load_original(original)
    kind = original_kind(source.state)
    _check_recipe_fits(source, kind, recipe)
    if kind == "baseline_vqvae":
        task, network, extra, note = _import_tokenizer(source, recipe, registry)
    else:
        parts, extra = build_imported_prior(source, kind, recipe, registry)
        task, network, note = recipe.task, parts.network, parts.describe()
    written: list[Path] = []
    if out_path is not None:
        save_checkpoint(out_path, task=task, recipe=recipe.text(), modules={"network": network}, extra=extra)
        written.append(out_path)
    if run_dir is not None:
        written.append(_write_run(run_dir, recipe, task, network, extra))
    parameters = sum(p.numel() for p in network.parameters())
    return ImportReport(source, kind, written, note, parameters)


def _check_recipe_fits(source: OriginalCheckpoint, kind: str | None, recipe: Recipe) -> None:
    """One line saying which recipe a file needs, before anything is built."""
    network = (recipe.get("network") or {}).get("name")
    if kind is None:
        shown = ", ".join(strip_ddp_prefix(k) for k in list(source.state)[:4]) or "none"
        raise CheckpointError(
            f"{source.path}: not a checkpoint of the original baseline_vqvae, performer or xtransformer (their "
            f"network keys start encoder.0./decoder.0./quantizer.0.impl., performer., or attn_layers.; this file "
            f"has {shown}, ...)."
        )
    if kind == "baseline_vqvae" and (recipe.task != "tokenizer" or network != "baseline_vqvae"):
        raise RecipeError(
            f"{source.path}: an original baseline_vqvae checkpoint; import it with a tokenizer recipe whose network is "
            f"baseline_vqvae ('brainsynth import-script' of its run_vqvae.py script), not this one (task "
            f"'{recipe.task}', network '{network}')."
        )
    if kind != "baseline_vqvae" and canonical(recipe.task) != "prior":
        raise RecipeError(
            f"{source.path}: an original {kind} checkpoint (a prior); import it with a prior recipe (task: prior, "
            f"network: {OUR_NETWORK[kind]}; 'brainsynth import-script' of its run_transformer.py script), not this "
            f"'{recipe.task}' recipe."
        )


def _import_tokenizer(source: OriginalCheckpoint, recipe: Recipe, registry: Registry):
    """The baseline_vqvae weights renamed onto the recipe's network, and the volume space it works in."""
    network = registry.build("tokenizer", recipe["network"])
    weights = map_original_state_dict(source.state, network.state_dict())
    result = network.load_state_dict(weights, strict=False)
    if result.unexpected_keys:  # map_original_state_dict already refuses these; keep the guarantee explicit
        raise CheckpointError(f"{source.path}: unexpected key '{result.unexpected_keys[0]}' for the recipe's network.")
    network.eval()
    space, note = recorded_space(recipe, registry, network)
    extra = {
        "space": space,
        "imported": {
            "source": str(Path(source.path).resolve()),
            "form": source.form,
            "ddp_prefix": any(k.startswith("module.") for k in source.state),
            "skipped_entries": source.other_entries,
            "allowed_globals": source.allowed_globals,
        },
    }
    return "tokenizer", network, extra, note


def recorded_space(recipe: Recipe, registry: Registry, network) -> tuple[dict[str, Any], str]:
    """The volume shape (and affine) the tokenizer works in, as training would have recorded it."""
    block = dict(recipe["data"])
    if "cache" in block:
        block["cache"] = "none"  # one volume is read; never fill a cache for it
    try:
        item = registry.build("dataset", block).split("train", train=False)[0]
        image = item["image"]
        shape = [int(s) for s in image.shape[1:]]
        network.check_spatial_shape(shape)
        affine = getattr(image, "affine", None)
        space: dict[str, Any] = {"spatial_shape": shape}
        if affine is not None:
            space["affine"] = np.asarray(affine.detach().cpu().numpy(), dtype=np.float64).tolist()
        return space, f"volume space from the first training volume '{item['subject']}' ({'x'.join(map(str, shape))})"
    except BrainsynthError as exc:
        reason = str(exc)
    roi = block.get("roi")
    if roi:
        shape = [int(r[1]) - int(r[0]) if isinstance(r, (list, tuple)) else int(r) for r in roi]
        network.check_spatial_shape(shape)
        return {"spatial_shape": shape}, (
            f"volume shape {'x'.join(map(str, shape))} from data.roi; no training volume was readable ({reason}), "
            f"so decoded volumes get an identity affine until the run extracts tokens from real volumes"
        )
    raise CheckpointError(
        f"the imported tokenizer needs the volume shape it works on: the recipe's training data cannot be read "
        f"({reason}) and data.roi is not set. Fix data.train or set data.roi (the original's --roi)."
    )


def _write_run(run_dir: Path, recipe: Recipe, task: str, network, extra: dict[str, Any]) -> Path:
    """Assemble the run in a hidden sibling folder, then rename it into place."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.import-", dir=run_dir.parent))
    try:
        (staging / "recipe.yaml").write_text(recipe.text())
        best = staging / "checkpoints" / "best.pt"
        save_checkpoint(best, task=task, recipe=recipe.text(), modules={"network": network}, extra=extra)
        if run_dir.exists():
            raise RunError(f"run directory {run_dir} appeared while importing; it is left untouched.")
        os.rename(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_dir / "checkpoints" / "best.pt"
