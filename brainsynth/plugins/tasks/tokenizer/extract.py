"""``extract``: every subject's token grid as uint16 ``.npy`` with ``tokens.json`` (and reconstructions if asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainsynth.core.errors import RunError
from brainsynth.core.runner import Run
from brainsynth.library.token_files import listed_grids, stale_note, write_meta
from brainsynth.library.volume_files import volume_affine, write_nifti, write_npy_atomic

from .network import build_network, load_trained


@torch.no_grad()
def run_mode(run: Run) -> dict[str, Any]:
    """Token grids (uint16 ``.npy``) of every subject, plus reconstructions if asked."""
    data = run.build("data")
    network = build_network(run)
    state = load_trained(run, network)
    outputs = run.recipe["outputs"]
    if network.num_embeddings > np.iinfo(np.uint16).max + 1:
        raise RunError(f"a codebook of {network.num_embeddings} codes does not fit uint16 tokens.")
    counts = {}
    for split in outputs["splits"] or data.splits:
        folder = run.path(Path("tokens") / split, "outputs.splits")
        recon_folder = run.path(Path("reconstructions") / split, "outputs.splits")
        dataset = data.split(split, train=False)
        affines, grid = {}, None
        folder.mkdir(parents=True, exist_ok=True)
        with run.progress(len(dataset), f"extract {split}") as bar:
            for index in range(run.dist.rank, len(dataset), run.dist.world_size):
                item = dataset[index]
                image = item["image"].unsqueeze(0).to(run.device)
                network.check_spatial_shape(image.shape[2:])
                tokens = network.encode_tokens(image)[0].cpu().numpy().astype(np.uint16)
                grid = list(tokens.shape)
                affine = volume_affine(item["image"], 0)
                affines[item["subject"]] = affine.tolist()
                write_npy_atomic(folder / f"{item['subject']}.npy", tokens)
                if outputs["reconstructions"]:
                    recon_folder.mkdir(parents=True, exist_ok=True)
                    recon = network.decode_tokens(torch.from_numpy(tokens.astype(np.int64))[None].to(run.device))
                    write_nifti(recon_folder / f"{item['subject']}.nii.gz", recon[0], affine)
                bar.update()
        if run.dist.is_distributed:
            gathered = [None] * run.dist.world_size
            torch.distributed.all_gather_object(gathered, affines)
            affines = {k: v for part in gathered for k, v in part.items()}
        if run.dist.is_main:
            table = getattr(data, "conditioning_table", None)
            meta = {"num_embeddings": network.num_embeddings, "grid": grid, "subjects": sorted(affines),
                    "space": state["extra"].get("space"), "affines": affines,
                    "tokenizer_run": str(run.directory.resolve()),
                    "conditioning_table": str(Path(table).resolve()) if table is not None else None}
            write_meta(folder, meta)
            stale = listed_grids(folder)[1]
            if stale:
                run.say(f"warning: extract {split}: {stale_note(folder, stale, len(affines))}")
        counts[split] = len(affines)
        run.say(f"extract {split}: {len(affines)} token grids in {folder}")
    return {"tokens": counts}
