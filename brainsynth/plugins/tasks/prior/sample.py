"""The prior's ``sample`` mode: new brains, decoded through the tokenizer into NIfTI and PNG.

Samples are numbered; sample ``i`` belongs to batch ``i // batch_size``, whose random stream is
seeded by (seed, batch). A re-run therefore skips the batches already on disk and draws the
others exactly as an uninterrupted run would. The settings and conditions are recorded in
``samples.json``; a folder holding samples of other settings is never written into.

A prior trained with ``conditioning.dropout`` (null vectors) may be given only some variables
(``values``/``grid``/``fixed`` naming a subset; the others take their null vectors) or none
(unconditional samples), and may be sampled with ``guidance_scale`` != 1 (classifier-free
guidance). Its ``samples.csv`` has a ``given_variables`` column naming what each sample was
conditioned on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from brainsynth.core.errors import RecipeError, RunError
from brainsynth.core.files import write_bytes_atomic
from brainsynth.core.runner import Run
from brainsynth.core.sampling import check_guidance, check_guided_variables, sample
from brainsynth.core.schema import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from brainsynth.library.prior_assembly import PriorParts
from brainsynth.library.volume_files import mid_slices, write_nifti, write_npy_atomic, write_png

from .trained import trained_prior

Value = int | float | str


@dataclasses.dataclass
class SampleConfig:
    """The ``sample`` section: how many brains, conditioned on what, drawn how."""

    checkpoint: Literal["best", "last"] = "best"
    values: list[dict[str, Value]] | None = None
    """Explicit conditions, one mapping of variable -> raw value per condition."""
    grid: dict[str, list[Value]] | None = None
    """Every combination of these values (variable -> list), completed by `fixed`."""
    fixed: dict[str, Value] | None = None
    """Values shared by every condition of `grid` or `values` (e.g. sex while varying age)."""
    split: str | None = None
    """Condition on the table values of this split's subjects (e.g. val)."""
    samples_per_condition: PositiveInt = 1
    num_samples: PositiveInt | None = None
    """Unconditioned: how many (default 8). Conditioned: cycle through the conditions up to this many."""
    batch_size: PositiveInt = 4
    temperature: PositiveFloat = 1.0
    top_k: PositiveInt | None = None
    top_p: Annotated[float, Range(gt=0, le=1)] | None = None
    guidance_scale: NonNegativeFloat = 1.0
    """Classifier-free guidance: 1 plain conditional sampling, 0 the unconditional (null) branch,
    >1 logits null + scale * (cond - null). Needs a prior trained with conditioning.dropout."""
    guidance_variables: list[str] | None = None
    """Guide only these variables (the null branch keeps the others' values); default all given."""
    seed: int | None = None
    """Default: the recipe's seed."""
    output: str = "samples"
    """Folder inside the run."""
    png: bool = True
    """Also write a PNG of the three mid-slices of every sample."""


def sample_conditions(parts: PriorParts, config: dict[str, Any]) -> list[dict[str, Value]]:
    """The raw conditioning values of every sample, in sample order ({} when unconditioned).

    A prior with null vectors accepts conditions naming only some variables, and none at all:
    without values/grid/split, every sample is conditioned on `fixed` alone (unconditional
    when `fixed` is empty too; `num_samples` of them, default 8).
    """
    given = [key for key in ("values", "grid", "split") if config[key]]
    if not parts.conditioned:
        if given or config["fixed"]:
            raise RecipeError(
                f"sample.{(given or ['fixed'])[0]}: this prior is not conditioned; leave the sample conditions out."
            )
        return [{} for _ in range(config["num_samples"] or 8)]
    nulls = getattr(parts.conditioning, "has_nulls", False)
    if len(given) > 1 or (not given and not nulls):
        raise RecipeError(
            f"sample: this prior is conditioned on {', '.join(parts.conditioning.columns)}; give exactly one of "
            f"sample.values, sample.grid or sample.split (got {', '.join(given) or 'none'})"
            + ("." if nulls else "; it was trained without conditioning.dropout, so it cannot sample unconditionally.")
        )
    fixed = dict(config["fixed"] or {})
    if not given:
        parts.table.encode_many([fixed], partial=True)  # names and values checked before sampling
        if not fixed:
            return [{} for _ in range(config["num_samples"] or 8)]
        rows = [fixed for _ in range(config["samples_per_condition"])]
        count = config["num_samples"] or len(rows)
        return [dict(rows[i % len(rows)]) for i in range(count)]
    if config["values"]:
        rows = [{**fixed, **row} for row in config["values"]]
    elif config["grid"]:
        columns = list(config["grid"])
        rows = [{**fixed, **dict(zip(columns, combo))} for combo in itertools.product(*config["grid"].values())]
    else:
        table = parts.table
        subjects = table.select([s.name for s in parts.data.subjects(config["split"])], missing="drop")
        rows = [table.raw_values(subject) for subject in subjects]
        if not rows:
            raise RunError(f"sample.split: no subject of '{config['split']}' has values in {parts.table_path}.")
    # every value encodable (and, without null vectors, every variable given): fail before sampling
    parts.table.encode_many(rows, partial=nulls)
    rows = [row for row in rows for _ in range(config["samples_per_condition"])]
    if config["num_samples"] is not None:
        rows = [rows[i % len(rows)] for i in range(config["num_samples"])]
    return rows


def _settings(parts: PriorParts, config: dict[str, Any], seed: int, conditions: list[dict]) -> dict[str, Any]:
    keys = ("checkpoint", "batch_size", "temperature", "top_k", "top_p")
    settings = {**{k: config[k] for k in keys}, "seed": seed}
    if config["guidance_scale"] != 1:  # recorded only when used, so folders of earlier runs still match
        settings["guidance_scale"] = float(config["guidance_scale"])
    if config["guidance_variables"] is not None:
        settings["guidance_variables"] = list(config["guidance_variables"])
    record: dict[str, Any] = {"settings": settings, "conditions": conditions}
    if parts.conditioned and getattr(parts.conditioning, "has_nulls", False):
        record["variables"] = list(parts.conditioning.columns)
    return record


def _claim_folder(folder: Path, record: dict[str, Any]) -> None:
    """Create the folder with its record, or check that the samples already there match it."""
    manifest = folder / "samples.json"
    text = json.dumps(record, indent=1, sort_keys=True, default=str)
    if manifest.is_file():
        if json.loads(manifest.read_text()) != json.loads(text):
            raise RunError(
                f"{folder} holds samples drawn with other settings or conditions; set sample.output to a new "
                "folder (samples are never overwritten)."
            )
        return
    if folder.exists() and any(folder.iterdir()):
        raise RunError(f"{folder} exists and is not a samples folder; set sample.output to a new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in record["conditions"] for c in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    variables = record.get("variables")  # a prior with null vectors: say what each sample was given
    columns = list(dict.fromkeys([*(variables or []), *columns])) if variables else columns
    writer.writerow(["sample", "file", *columns, *([GIVEN_COLUMN] if variables else [])])
    for index, row in enumerate(record["conditions"]):
        given = [";".join(c for c in variables if c in row) or "none"] if variables else []
        writer.writerow([index, f"{sample_name(index)}.nii.gz", *(row.get(c, "") for c in columns), *given])
    # samples.json last: once it is there, a re-run takes the folder as claimed and writes neither again
    write_bytes_atomic(folder / "samples.csv", buffer.getvalue().encode())
    write_bytes_atomic(manifest, text.encode())


GIVEN_COLUMN = "given_variables"
"""samples.csv column of a prior with null vectors: the variables a sample was conditioned on
(``;``-separated, ``none`` when unconditional); the others took their null vectors."""


def sample_name(index: int) -> str:
    return f"sample_{index:05d}"


def write_samples(run: Run, parts: PriorParts, config: dict[str, Any]) -> dict[str, Any]:
    """Draw, decode and write every sample not already on disk; returns counts and the folder."""
    if config["batch_size"] < 1 or config["samples_per_condition"] < 1:
        raise RecipeError("sample.batch_size and sample.samples_per_condition must be at least 1.")
    seed = run.recipe["seed"] if config["seed"] is None else config["seed"]
    try:
        check_guidance(parts.network, float(config["guidance_scale"]))
    except RecipeError as error:
        raise RecipeError(f"{run.recipe.origins(('sample', 'guidance_scale'))}: {error}") from None
    try:
        check_guided_variables(parts.network, config["guidance_variables"])
    except RecipeError as error:
        raise RecipeError(f"{run.recipe.origins(('sample', 'guidance_variables'))}: {error}") from None
    conditions = sample_conditions(parts, config)
    if parts.conditioned:  # once per variable, with its training range
        for note in parts.table.outside_training_range([row for row in conditions if row]):
            run.say(f"warning: sample: {note}")
    if config["guidance_scale"] == 0 and any(conditions):
        run.say("sample: guidance_scale 0 draws from the unconditional (null) branch; the given values are not used.")
    folder = run.path(config["output"], "sample.output")
    if run.dist.is_main:
        _claim_folder(folder, _settings(parts, config, seed, conditions))
    if run.dist.is_distributed:
        torch.distributed.barrier()
    tokenizer = parts.tokenizer
    affine = np.asarray(tokenizer.affine if tokenizer.affine is not None else np.eye(4), dtype=np.float64)
    for sub in ("tokens", "png") if config["png"] else ("tokens",):
        (folder / sub).mkdir(exist_ok=True)

    batch_size = config["batch_size"]
    batches = [list(range(start, min(start + batch_size, len(conditions)))) for start in range(0, len(conditions), batch_size)]
    mine = [b for b in range(len(batches)) if b % run.dist.world_size == run.dist.rank]
    todo = [b for b in mine if not all((folder / f"{sample_name(i)}.nii.gz").is_file() for i in batches[b])]
    skipped = sum(len(batches[b]) for b in mine) - sum(len(batches[b]) for b in todo)
    if skipped:
        run.say(f"sample: {skipped} sample(s) already in {folder}, skipped")
    length = parts.length
    written = 0
    with run.progress(len(todo) * length, f"sample {len(conditions)} brains ({length} tokens each)") as bar:
        for b in todo:
            indices = batches[b]
            generator = torch.Generator(device=run.device).manual_seed(seed * 1_000_003 + b)
            values = None
            if parts.conditioned:
                rows = [conditions[i] for i in indices]
                if any(rows):  # a prior with null vectors given nothing: sample() fills in the nulls
                    codes = parts.table.encode_many(rows, partial=getattr(parts.conditioning, "has_nulls", False))
                    values = parts.values(codes, run.device)
            sequences = sample(
                parts.network, len(indices), values, temperature=config["temperature"], top_k=config["top_k"],
                top_p=config["top_p"], generator=generator, guidance_scale=config["guidance_scale"],
                guided_variables=config["guidance_variables"], progress=lambda _: bar.update(),
            )
            grids = parts.ordering.revert(sequences)
            with torch.inference_mode():
                volumes = tokenizer.network.decode_tokens(grids).float()
            for position, index in enumerate(indices):
                name = sample_name(index)
                write_npy_atomic(folder / "tokens" / f"{name}.npy", grids[position].cpu().numpy().astype(np.uint16))
                if config["png"]:
                    write_png(folder / "png" / f"{name}.png", mid_slices(volumes[position]))
                write_nifti(folder / f"{name}.nii.gz", volumes[position], affine)  # last: it marks the sample done
                written += 1
    if run.dist.is_distributed:
        count = torch.tensor([written], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(count)
        written = int(count.item())
    run.say(f"sample: {written} brain(s) written to {folder} ({len(conditions)} in all)")
    return {"samples": len(conditions), "written": written, "folder": str(folder)}


def run_mode(run: Run) -> dict[str, Any]:
    """The ``sample`` mode, with the prior from the checkpoint ``sample.checkpoint`` names."""
    config = run.recipe["sample"]
    return write_samples(run, trained_prior(run, config["checkpoint"]), config)
