"""The prior's ``likelihood`` mode: per-token log-likelihood maps, the anomaly maps of the paper.

For each subject, the teacher-forced log-probability of every token is put back on the token
grid (the ordering reverted), saved as ``grid/<subject>.npy``, and up-sampled to the image the
grid was extracted from, saved as ``<subject>.nii.gz`` in that image's space. Low values mark
regions the prior finds unlikely. A csv per split lists each subject's mean negative
log-likelihood per token (nats) and in bits.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.core.runner import Run
from brainsynth.core.files import write_bytes_atomic
from brainsynth.core.schema import PositiveInt
from brainsynth.library.prior_assembly import PriorParts, image_space
from brainsynth.library.volume_files import write_nifti, write_npy_atomic

from .trained import trained_prior


@dataclasses.dataclass
class LikelihoodConfig:
    """The ``likelihood`` section."""

    checkpoint: Literal["best", "last"] = "best"
    splits: list[str] | None = None
    """Splits to score (default: every split of the data)."""
    batch_size: PositiveInt = 2
    upsample: Literal["trilinear", "nearest"] = "trilinear"
    """How token-grid maps are brought to image resolution (nearest keeps one value per token block)."""
    output: str = "likelihood"
    """Folder inside the run."""


@torch.no_grad()
def token_log_likelihood(parts: PriorParts, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """[B, *grid] log-probability of each token given the tokens before it (and the conditioning)."""
    inputs, target, conditioning = parts.batch(batch, device)
    logits = parts.network(inputs, conditioning).float()
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return parts.ordering.revert(log_probs)


def write_likelihood_maps(run: Run, parts: PriorParts, config: dict[str, Any]) -> dict[str, Any]:
    """Score every subject of the chosen splits; write the maps and a csv per split."""
    out_root = run.path(config["output"], "likelihood.output")
    summary: dict[str, Any] = {}
    for split in config["splits"] or parts.data.splits:
        dataset = parts.dataset(split)
        indices = list(range(run.dist.rank, len(dataset), run.dist.world_size))
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=config["batch_size"])
        folder = out_root / split
        (folder / "grid").mkdir(parents=True, exist_ok=True)
        rows = []
        with run.progress(len(indices), f"likelihood {split}") as bar:
            for batch in loader:
                maps = token_log_likelihood(parts, batch, run.device).cpu()
                for position, subject in enumerate(batch["subject"]):
                    grid_map = maps[position]
                    write_npy_atomic(folder / "grid" / f"{subject}.npy", grid_map.numpy().astype(np.float32))
                    image = batch["image"][position] if "image" in batch else None
                    shape, affine = image_space(parts, split, subject, image)
                    mode = config["upsample"]
                    volume = F.interpolate(
                        grid_map[None, None], size=shape, mode=mode, **({"align_corners": False} if mode != "nearest" else {})
                    )[0, 0]
                    write_nifti(folder / f"{subject}.nii.gz", volume, affine)
                    nll = -float(grid_map.mean())
                    rows.append({"subject": subject, "nll_per_token": nll, "bits_per_token": nll / math.log(2)})
                    bar.update()
        if run.dist.is_distributed:
            gathered: list[Any] = [None] * run.dist.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = sorted((r for part in gathered for r in part), key=lambda r: r["subject"])
        if run.dist.is_main and rows:
            table = io.StringIO(newline="")
            writer = csv.DictWriter(table, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            write_bytes_atomic(out_root / f"{split}.csv", table.getvalue().encode())
        mean = sum(r["nll_per_token"] for r in rows) / max(len(rows), 1)
        summary[split] = {"subjects": len(rows), "nll_per_token": mean}
        run.say(f"likelihood {split}: {len(rows)} maps in {folder}, mean NLL {mean:.4f} nats/token")
    return summary


def run_mode(run: Run) -> dict[str, Any]:
    """The ``likelihood`` mode, with the prior from the checkpoint ``likelihood.checkpoint`` names."""
    config = run.recipe["likelihood"]
    return write_likelihood_maps(run, trained_prior(run, config["checkpoint"]), config)
