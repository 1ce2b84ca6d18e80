"""The prior's ``evaluate`` mode: how real and how morphology-preserving its samples are.

The samples written by ``sample`` are compared with real brains of one split of the tokenizer's
own data, preprocessed by the tokenizer's evaluation chain, so both sets live in the space the
tokenizer was trained in. The set metrics (diversity, MMD, FID or its clearly labelled
random-feature stand-in, and conditioned-vs-measured volumes) come from the ``metric`` plugins.
Results: ``metrics.evaluate.json`` (the summary), and in ``evaluation/``: ``rows.json`` (one row
per volume), ``notes.json`` (how each number was obtained), ``files.json`` (the volumes compared)
and the real brains used, as NIfTI.

The real brains are also passed through the tokenizer (encode, quantise, decode) and their
volumes measured again, with the real brains' tissue contrast as the samples are
(``<variable>_reconstructed_spearman``, ``_slope``, ``_intercept``, ``_mae``): the morphology
the tokenizer keeps is all the prior can condition, so this is the ceiling of the samples' ρ,
and it tells a weak tokenizer from a weak prior. ``sharpness_reconstructed_ratio`` is the
reconstructions' mean gradient magnitude inside the brain over the real brains' (see
`sharpness`): below 1, the tokenizer blurs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from brainsynth.core.errors import DataError, RunError
from brainsynth.core.runner import Run
from brainsynth.core.schema import component_block
from brainsynth.library.prior_assembly import PriorParts
from brainsynth.library.reconstruction_evaluation import evaluate_reconstructions
from brainsynth.library.sample_evaluation import evaluate_samples
from brainsynth.library.volume_files import volume_affine, write_nifti

from .trained import trained_prior

EVALUATION_FOLDER = "evaluation"


@dataclasses.dataclass
class EvaluationConfig:
    """The ``evaluation`` section."""

    samples: str = "samples"
    """The folder of samples inside the run (``sample.output``)."""
    split: str = "val"
    """Real brains: this split of the tokenizer's data."""
    fid_weights: str | None = None
    """MedicalNet weights for FID; without them a random-feature distance is reported under its own name."""
    metrics: list[component_block("set_metric")] | None = None
    """Set-metric blocks (default: ms_ssim_diversity, mmd, fid, morphology_preservation)."""


def _sample_files(folder: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    manifest = folder / "samples.json"
    if not manifest.is_file():
        raise RunError(f"{folder}: no samples.json here; draw samples first (--mode sample).")
    conditions = json.loads(manifest.read_text())["conditions"]
    files = [folder / f"sample_{i:05d}.nii.gz" for i in range(len(conditions))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise RunError(
            f"{folder}: {len(missing)} of {len(files)} samples are not written yet (first: {missing[0]}); "
            "finish them with --mode sample."
        )
    return files, conditions


def write_evaluation(run: Run, parts: PriorParts, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the run's samples against real brains; write the evaluation files."""
    files, conditions = _sample_files(run.path(config["samples"], "evaluation.samples"))
    tokenizer = parts.tokenizer
    if tokenizer.recipe is None:
        raise RunError(f"{tokenizer.directory}: the tokenizer's recipe is unknown, so its real brains are too.")
    data = run.registry.build("dataset", tokenizer.recipe["data"])
    dataset = data.split(config["split"], train=False)
    out, through = (run.directory / EVALUATION_FOLDER / name for name in ("real", "reconstructed"))
    out.mkdir(parents=True, exist_ok=True)
    through.mkdir(parents=True, exist_ok=True)
    references, reconstructed, names, reference_conditioning = [], [], [], []
    with run.progress(len(dataset), f"real brains ({config['split']}), and through the tokenizer") as bar:
        for index in range(len(dataset)):
            item = dataset[index]
            image = item["image"]
            affine = volume_affine(image)
            path = out / f"{item['subject']}.nii.gz"
            write_nifti(path, image, affine)
            references.append(path)
            with torch.no_grad():
                tokens = tokenizer.network.encode_tokens(torch.as_tensor(image)[None].float().to(run.device))
                write_nifti(through / path.name, tokenizer.network.decode_tokens(tokens)[0], affine)
            reconstructed.append(through / path.name)
            names.append(item["subject"])
            if parts.table is not None:
                try:
                    reference_conditioning.append(parts.table.raw_values(item["subject"]))
                except DataError:  # a real brain without a table row still counts for realism
                    reference_conditioning.append({})
            bar.update()
    summary, rows, notes = evaluate_samples(
        files, references, conditions, fid_weights=config["fid_weights"],
        reference_conditioning=reference_conditioning or None, sample_names=[f.name.split(".")[0] for f in files],
        reference_names=names, metrics=config["metrics"], registry=run.registry, log=run.say,
    )
    kept = evaluate_reconstructions(references, reconstructed, reference_conditioning, names)
    summary.update(kept.values)
    rows = [*rows, *kept.rows]
    notes.update(kept.notes)
    run.say("through the tokenizer: " + ", ".join(f"{k} {v:.4g}" for k, v in kept.values.items()))
    folder = run.directory / EVALUATION_FOLDER
    (folder / "rows.json").write_text(json.dumps(rows, indent=1, default=float))
    (folder / "notes.json").write_text(json.dumps(notes, indent=1))
    (folder / "files.json").write_text(json.dumps({
        "samples": [str(f) for f in files], "real": [str(r) for r in references],
        "reconstructed": [str(r) for r in reconstructed],
    }))
    return {**summary, "samples": len(files), "real": len(references)}


def run_mode(run: Run) -> dict[str, Any]:
    """The ``evaluate`` mode, with the prior from the checkpoint ``sample.checkpoint`` names."""
    config = run.recipe["evaluation"]
    return write_evaluation(run, trained_prior(run, run.recipe["sample"]["checkpoint"]), config)
