"""``decode``: token grids back to NIfTI volumes in the space the tokenizer was trained in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainsynth.core.errors import DataError
from brainsynth.core.files import is_data_file
from brainsynth.core.runner import Run
from brainsynth.library.token_files import listed_grids, read_meta, stale_note
from brainsynth.library.volume_files import write_nifti
from brainsynth.library.token_grid import shape_text

from .network import build_network, load_trained


@torch.no_grad()
def run_mode(run: Run) -> dict[str, Any]:
    """Token grids -> NIfTI volumes in the space the tokenizer was trained in."""
    network = build_network(run)
    state = load_trained(run, network)
    source = Path(run.recipe["outputs"]["tokens"] or run.directory / "tokens")
    files = []
    folders = sorted({p.parent for p in source.rglob("*.npy") if is_data_file(p)}) if source.is_dir() else []
    for folder in folders:
        listed, stale = listed_grids(folder)
        files.extend(listed)
        if stale:
            run.say(f"warning: {stale_note(folder, stale, len(listed))}")
    if not files:
        raise DataError(f"{source}: no .npy token grids to decode; set outputs.tokens to a folder of them.")
    space = state["extra"].get("space") or {}
    expected = _trained_grid(run, network, space)
    default_affine = np.asarray(space.get("affine", np.eye(4)))
    out_root = run.directory / "decoded"
    written = 0
    with run.progress(len(files), "decode") as bar:
        for index in range(run.dist.rank, len(files), run.dist.world_size):
            path = files[index]
            grid = np.load(path, allow_pickle=False)
            if not np.issubdtype(grid.dtype, np.integer):
                raise DataError(f"{path}: token grids hold integers, this file holds {grid.dtype}.")
            if grid.size and (grid.min() < 0 or grid.max() >= network.num_embeddings):
                bad = int(grid.max()) if grid.max() >= network.num_embeddings else int(grid.min())
                raise DataError(
                    f"{path}: token {bad} is outside this tokenizer's codebook [0, {network.num_embeddings}); "
                    f"the grid comes from another tokenizer."
                )
            if expected is not None and tuple(grid.shape) != expected:
                raise DataError(
                    f"{path}: token grid of shape {shape_text(grid.shape)}, but this tokenizer was trained on "
                    f"{shape_text(space['spatial_shape'])} volumes, whose grid is {shape_text(expected)} (it would decode "
                    f"to {shape_text(network.output_shape(grid.shape))}). The grid comes from another tokenizer or "
                    f"ROI; decode it with that one."
                )
            affines = read_meta(path.parent).get("affines", {})
            affine = np.asarray(affines.get(path.stem, default_affine))
            volume = network.decode_tokens(torch.from_numpy(grid.astype(np.int64))[None].to(run.device))
            target = out_root / path.parent.relative_to(source)
            target.mkdir(parents=True, exist_ok=True)
            write_nifti(target / f"{path.stem}.nii.gz", volume[0], affine)
            written += 1
            bar.update()
    run.say(f"decode: {written} volumes in {out_root}")
    return {"decoded": written}


def _trained_grid(run: Run, network, space: dict) -> tuple[int, ...] | None:
    """The token grid of the volumes the tokenizer was trained on, when they had one size (data.roi)."""
    if (run.recipe["data"] or {}).get("roi") is None or not space.get("spatial_shape"):
        return None
    return tuple(int(g) for g in network.token_grid(space["spatial_shape"]))
