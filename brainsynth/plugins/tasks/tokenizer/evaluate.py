"""``evaluate``: reconstruction metrics of every subject of the chosen splits (``evaluation/<split>.csv``).

`evaluate_split` is also what ``train`` validates with, so the metric that picks ``best.pt`` is
the one this mode reports.
"""

from __future__ import annotations

import csv
from typing import Any

import torch

from brainsynth.core.precision import autocast
from brainsynth.core.runner import Run

from .network import build_network, load_trained

DEFAULT_METRICS = ("ms_ssim", "mae", "mse", "psnr")


def build_metrics(run: Run) -> dict[str, Any]:
    """The recipe's reconstruction metrics by name (the defaults when it names none)."""
    blocks = run.recipe["metrics"] or [{"name": n} for n in DEFAULT_METRICS]
    return {block["name"]: run.registry.build("metric", block) for block in blocks}


@torch.no_grad()
def evaluate_split(run: Run, network, dataset) -> dict[str, Any]:
    """Per-subject reconstruction metrics (this rank's share) and their all-reduced means."""
    metrics = build_metrics(run)
    was_training = network.training
    network.eval()
    indices = range(run.dist.rank, len(dataset), run.dist.world_size)
    rows, example = [], None
    for index in indices:
        item = dataset[index]
        image = item["image"].unsqueeze(0).to(run.device)
        with autocast(run.recipe["precision"], run.device):
            out = network(image)
        recon = out.reconstruction.float().clamp(0, 1) if image.min() >= 0 else out.reconstruction.float()
        row = {"subject": item["subject"]}
        for name, metric in metrics.items():
            row[name] = float(metric(recon, image.float()).mean())
        row["perplexity"] = float(out.perplexity)
        row["code_usage"] = float(out.code_usage)
        rows.append(row)
        if example is None:
            example = (image[0], recon[0])
    keys = [k for k in rows[0] if k != "subject"] if rows else list(metrics) + ["perplexity", "code_usage"]
    sums = {k: sum(r[k] for r in rows) for k in keys}
    count = len(rows)
    if run.dist.is_distributed:
        values = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(values)
        sums = {k: values[i].item() for i, k in enumerate(keys)}
        count = int(values[-1].item())
    network.train(was_training)
    summary = {k: sums[k] / max(count, 1) for k in keys}
    return {"rows": rows, "summary": summary, "example": example}


def run_mode(run: Run) -> dict[str, Any]:
    """Reconstruction metrics of every subject of the chosen splits, as csv tables."""
    data = run.build("data")
    network = build_network(run)
    load_trained(run, network)
    out_dir = run.directory / "evaluation"
    results = {}
    for split in run.recipe["outputs"]["splits"] or data.splits:
        evaluation = evaluate_split(run, network, data.split(split, train=False))
        if run.dist.is_main:
            out_dir.mkdir(exist_ok=True)
            rows = evaluation["rows"]
            with open(run.path(out_dir / f"{split}.csv", "outputs.splits"), "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        results[split] = evaluation["summary"]
        run.say(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in evaluation["summary"].items()))
    return results
