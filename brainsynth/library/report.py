"""`write_report`: one folder a person opens offline to judge a run.

The folder holds ``index.html`` (no script, no remote resource: figures are PNG files beside it,
referenced by relative path), the PNG figures, ``summary.json`` (metric name -> value, ``null``
where a value could not be computed), ``summary.md`` (the same table in markdown, for a README or
a pull request), ``recipe.yaml`` and, when per-volume measurements are given, ``morphology.csv``.

Usage::

    from brainsynth.library.report import ReportInputs, write_report

    index = write_report(run_dir / "report", ReportInputs(
        title="demo", metrics={"tokenizer_ms_ssim": 0.93, **summary}, recipe_text=recipe_yaml,
        real=real_paths, reconstructed=reconstruction_paths, sampled=sample_paths, morphology=rows,
        notes=notes,
    ))

`rows`/`summary`/`notes` are what `evaluate_samples` returns. The report is built in a
temporary sibling folder and renamed into place, so a folder named like the report is always a
complete one. An existing folder is never overwritten unless `overwrite=True`, and then only if
it is a report.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainsynth.core.errors import DataError, RunError
from brainsynth.library.morphology_summaries import JOINT_VARIABLES
from brainsynth.library.volume_files import VIEWS

from .report_figures import (
    Panel,
    group_effect_strip,
    morphology_scatter,
    sharpness_strip,
    slice_montage,
    volume_distribution,
    volume_joint,
)

REPORT_FILES = ("index.html", "summary.json")
"""A folder holding these is a report (and may be replaced with ``overwrite=True``)."""

METRIC_DESCRIPTIONS = {
    "tokenizer_ms_ssim": "tokenizer reconstruction MS-SSIM on real brains (higher is better, 1 = identical)",
    "tokenizer_mae": "tokenizer reconstruction mean absolute error (lower is better)",
    "tokenizer_mse": "tokenizer reconstruction mean squared error (lower is better)",
    "tokenizer_psnr": "tokenizer reconstruction PSNR in dB (higher is better)",
    "ms_ssim_diversity": "mean MS-SSIM between pairs of samples (lower = more diverse; compare with the real value)",
    "ms_ssim_diversity_real": "mean MS-SSIM between pairs of real brains (the diversity to match)",
    "mmd": "MMD^2 between samples and real brains (lower is better, 0 = same distribution)",
    "fid": "FID on MedicalNet 3D features (lower is better)",
    "fid_random_features": "Fréchet distance on RANDOM-network features: not FID, only for comparing runs here",
    "sharpness_ratio": "samples' mean gradient magnitude inside the brain / real brains' (1 = as sharp as real, "
                       "< 1 blurrier, > 1 sharper or noisier; closer to 1 is better)",
    "sharpness_reconstructed_ratio": "the same ratio for real brains after the tokenizer / before (< 1: the tokenizer "
                                     "blurs; closer to 1 is better)",
    "volume_wasserstein_joint": "Wasserstein distance between the joint distributions of the measured volumes of "
                                "samples and real brains, each volume in real SDs (lower is better, 0 = same "
                                "distribution)",
}
VARIABLE_NAMES = {
    "ventricular_volume": "ventricular volume", "brain_volume": "brain volume",
    "medial_temporal_volume": "medial temporal volume",
}

GROUP_EFFECT_DESCRIPTIONS = {
    "samples": "Cohen's d of the samples' measured {name} between {group} levels (higher level minus lower, over "
               "the pooled SD), samples grouped by their condition: the signature the samples carry",
    "real": "the same Cohen's d on real brains, grouped by their recorded {group}: the signature to match",
    "ratio": "samples' d / real brains' d for {name} by {group} (1 = the samples carry the real effect in full, "
             "below 1 weakened, above 1 exaggerated; closer to 1 is better)",
    "samples_se": "standard error of the samples' d (large-sample formula; a lower bound when several samples share "
                  "a condition): how far the set's size lets it move",
    "real_se": "standard error of the real brains' d (large-sample formula): few brains in a group make it large",
    "ratio_se": "standard error of the ratio, from the two above (delta method): a ratio is only as sure as this",
}
"""Group-effect keys (``<group>_effect_<variable>_<suffix>``) and what they are."""


@dataclasses.dataclass
class ReportInputs:
    """What a report shows.

    Attributes:
        title: heading of the page.
        metrics: metric name -> value (e.g. ``tokenizer_ms_ssim``, ``ventricular_volume_spearman``).
        recipe_text: the resolved recipe (YAML) the results came from.
        real: NIfTI files of real brains.
        reconstructed: the tokenizer's reconstructions of `real`, in the same order (or empty).
        sampled: NIfTI files of generated brains.
        morphology: per-volume rows as `evaluate_samples` gives them: ``set`` ("sample"/"real"),
            ``name`` (the file name without ``.nii.gz``), ``conditioned_<variable>`` and
            ``measured_<variable>``; they give the scatter plots and the montage captions.
        notes: how numbers were obtained (metric or topic -> one line).
        montage_columns: volumes per montage row.
    """

    title: str
    metrics: Mapping[str, float]
    recipe_text: str = ""
    real: Sequence[str | os.PathLike] = ()
    reconstructed: Sequence[str | os.PathLike] = ()
    sampled: Sequence[str | os.PathLike] = ()
    morphology: Sequence[Mapping[str, Any]] = ()
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    montage_columns: int = 6


MORPHOLOGY_DESCRIPTIONS = {
    "spearman": "Spearman ρ of measured vs conditioned {name} over the samples (1 = same ranking)",
    "slope": "least-squares slope of measured on conditioned {name} (1 = a ml asked is a ml made; below 1, the "
             "requested differences come out compressed)",
    "real_spearman": "the same ρ on real brains, recorded vs measured {name}: what the measurement reaches",
    "real_slope": "the same slope on real brains, recorded vs measured {name}, as the measurement reads it (the "
                  "instrument line: the samples' and reconstructions' volumes are read back through it, see the "
                  "notes)",
    "reconstructed_spearman": "the same ρ on real brains after the tokenizer: the most the samples can reach ({name})",
    "reconstructed_slope": "the same slope on real brains after the tokenizer ({name})",
    "kept_spearman": "ρ of the measured {name} of real brains after the tokenizer against before it (1 = the "
                     "tokenizer keeps their order)",
    "kept_slope": "slope of the measured {name} after the tokenizer on before it (1 = kept at full size; below 1, "
                  "differences between brains shrink in the tokens)",
    "kept_mae": "mean absolute change of the measured {name} through the tokenizer, ml (lower is better)",
    "intercept": "intercept (ml) of the least-squares line of measured on conditioned {name} (0 with slope 1 = a ml "
                 "asked is a ml made)",
    "mae": "mean absolute error of measured vs conditioned {name}, ml (lower is better, 0 = exact)",
    "fixed_at": "{name} was held fixed at this value (ml) over all samples: no ρ or slope exists, see the measured "
                "mean and SD",
    "measured_mean": "mean measured {name} of the samples (ml), for a variable held fixed: compare with the fixed value",
    "measured_sd": "SD of the measured {name} of the samples (ml), for a variable held fixed: the spread of what was made",
    "wasserstein": "Wasserstein distance between the measured {name} of real brains and of samples, ml (lower is "
                   "better, 0 = same distribution)",
    "coverage": "share of samples whose measured {name} lies in the real brains' band at their condition (real "
                "line ± 2 residual SDs; about 0.95 for real brains, higher is better up to that)",
    "real_intercept": "the same intercept on real brains, recorded vs measured {name} (ml)",
    "real_mae": "the same MAE on real brains, recorded vs measured {name}: the measurement's own error (ml)",
    "reconstructed_intercept": "the same intercept on real brains after the tokenizer ({name}, ml)",
    "reconstructed_mae": "the same MAE on real brains after the tokenizer ({name}, ml)",
    "reconstructed_fixed_at": "the real brains all share this recorded {name} (ml)",
    "reconstructed_measured_mean": "mean measured {name} of the real brains after the tokenizer (ml)",
    "reconstructed_measured_sd": "SD of the measured {name} of the real brains after the tokenizer (ml)",
}
"""Per-variable morphology keys (``<variable>_<suffix>``) and what they are."""


def describe_metric(key: str) -> str:
    """One line saying what metric `key` is and which way is better."""
    if key in METRIC_DESCRIPTIONS:
        return METRIC_DESCRIPTIONS[key]
    for variable, name in VARIABLE_NAMES.items():
        for suffix, text in MORPHOLOGY_DESCRIPTIONS.items():
            if key == f"{variable}_{suffix}":
                return text.format(name=name)
        for suffix, text in GROUP_EFFECT_DESCRIPTIONS.items():
            ending = f"_effect_{variable}_{suffix}"
            if key.endswith(ending) and len(key) > len(ending):
                return text.format(name=name, group=key[: -len(ending)])
    return ""


def _effect_groups(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (group, variable) pairs that have an effect size among the metrics, in their order."""
    found = []
    for key in metrics:
        for variable in VARIABLE_NAMES:
            ending = f"_effect_{variable}_samples"
            if key.endswith(ending) and len(key) > len(ending):
                found.append((key[: -len(ending)], variable))
    return list(dict.fromkeys(found))


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _shown(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.4g}"


def _stem(path: str | os.PathLike) -> str:
    return Path(path).name.removesuffix(".gz").removesuffix(".nii")


def _check_inputs(inputs: ReportInputs) -> None:
    for label, paths in (("real", inputs.real), ("reconstructed", inputs.reconstructed), ("sampled", inputs.sampled)):
        for path in paths:
            if not Path(path).is_file():
                raise DataError(f"report: the {label} volume {path} does not exist; pass files that were written.")
    if inputs.reconstructed and len(inputs.reconstructed) != len(inputs.real):
        raise DataError(
            f"report: {len(inputs.reconstructed)} reconstructions for {len(inputs.real)} real brains; reconstructions "
            "are shown beside the brain they reconstruct, so give one per real brain, in the same order."
        )
    if inputs.montage_columns < 1:
        raise DataError(f"report: montage_columns must be at least 1, got {inputs.montage_columns}.")


def _sample_panels(inputs: ReportInputs) -> list[Panel]:
    """Up to `montage_columns` samples spread over the conditioned ventricular volume, with captions."""
    rows = {r.get("name"): r for r in inputs.morphology if r.get("set") == "sample"}
    samples = [(Path(p), rows.get(_stem(p), {})) for p in inputs.sampled]
    key = "conditioned_ventricular_volume"
    if samples and all(key in row for _, row in samples):
        samples.sort(key=lambda item: item[1][key])
    count = min(inputs.montage_columns, len(samples))
    chosen = [samples[int(i)] for i in np.unique(np.linspace(0, len(samples) - 1, count).round())] if count else []
    panels = []
    for path, row in chosen:
        caption = []
        if "conditioned_age" in row:
            caption.append(f"age {row['conditioned_age']:.0f}")
        if key in row:
            measured = row.get("measured_ventricular_volume")
            caption.append(f"vent. {row[key]:.0f} ml" + (f" (meas. {measured:.0f})" if _number(measured) is not None else ""))
        panels.append(Panel(path, ", ".join(caption)))
    return panels


Section = tuple[str, list[tuple[str, str]]]
"""A heading of the page and its (PNG file, caption) figures."""


def _figures(folder: Path, inputs: ReportInputs) -> list[Section]:
    """Write the PNGs; return the page's figure sections (empty ones left out)."""
    count = inputs.montage_columns
    groups = [
        ("real", [Panel(Path(p)) for p in inputs.real[:count]]),
        ("reconstructed", [Panel(Path(p)) for p in inputs.reconstructed[:count]]),
        ("sampled", _sample_panels(inputs)),
    ]
    montages = []
    if any(panels for _, panels in groups):
        shown = " vs ".join(label for label, panels in groups if panels)
        for view in VIEWS:
            name = f"montage_{view}.png"
            slice_montage(groups, view, folder / name, title=f"{shown}: {view} mid-slices")
            montages.append((name, f"{view.capitalize()} mid-slices: {shown}."))
    rows = list(inputs.morphology)
    scatters, distributions = [], []
    for variable, label in VARIABLE_NAMES.items():
        name = f"morphology_{variable}.png"
        if morphology_scatter(rows, variable, folder / name) is not None:
            scatters.append((name, f"Calibration of {label}: measured vs conditioned; dashed: identity, red: least-squares "
                                   "fit of the samples, green band: real brains' line ± 2 residual SDs (coverage)."))
        name = f"distribution_{variable}.png"
        if volume_distribution(rows, variable, folder / name) is not None:
            distributions.append((name, f"Measured {label} of real brains and samples: histograms and kernel densities."))
    if volume_joint(rows, list(JOINT_VARIABLES), folder / "distribution_joint.png") is not None:
        distributions.append(("distribution_joint.png", "Measured ventricular against brain volume, real and sampled."))
    effects = []
    for group, variable in _effect_groups(inputs.metrics):
        name = f"effect_{group}_{variable}.png"
        if group_effect_strip(rows, group, variable, folder / name) is not None:
            ratio = _number(inputs.metrics.get(f"{group}_effect_{variable}_ratio"))
            error = _number(inputs.metrics.get(f"{group}_effect_{variable}_ratio_se"))
            said = f"the samples carry {ratio:.2f} of the real effect" if ratio is not None else (
                "the real effect could not be computed (see the notes)")
            if ratio is not None and error is not None:
                said += f", give or take {error:.2f} (one standard error: small groups make this number move)"
            effects.append((name, f"Measured {VARIABLE_NAMES[variable]} by {group}, real brains and samples: a "
                                  f"diagnosis carries its signature when the samples' groups differ as the real "
                                  f"ones do (Cohen's d ratio near 1; here {said})."))
    sharpness = []
    if sharpness_strip(rows, folder / "sharpness.png") is not None:
        sharpness.append(("sharpness.png", "Each volume's mean gradient magnitude inside the brain; blur lowers it."))
    return [
        ("Real, reconstructed and sampled brains", montages),
        ("Morphology: conditioned vs measured volume", scatters),
        ("Distributions of measured volumes", distributions),
        ("Signature of a categorical condition: volume by group", effects),
        ("Sharpness", sharpness),
    ]


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _morphology_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(inputs: ReportInputs, sections: list[Section], files: list[str]) -> str:
    lines = [f"# {inputs.title}", "", "| metric | value | what it is |", "|---|---|---|"]
    lines += [f"| `{key}` | {_shown(value)} | {describe_metric(key)} |" for key, value in inputs.metrics.items()]
    if inputs.notes:
        lines += ["", "How the numbers were obtained:", ""]
        lines += [f"- `{key}`: {note}" for key, note in inputs.notes.items()]
    for heading, figures in sections:
        if figures:
            lines += ["", f"## {heading}", ""]
            lines += [f"![{caption}]({name})" for name, caption in figures]
    lines += ["", "Files: " + ", ".join(f"[{name}]({name})" for name in files), ""]
    return "\n".join(lines)


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; } .scatter { display: inline-block; margin-right: 1em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def _html(inputs: ReportInputs, sections: list[Section], files: list[str]) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><td><code>{e(key)}</code></td><td class=value>{e(_shown(value))}</td><td>{e(describe_metric(key))}</td></tr>"
        for key, value in inputs.metrics.items()
    )
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(inputs.title)}</title>",
        f"<style>{STYLE}</style></head><body>", f"<h1>{e(inputs.title)}</h1>",
        f"<p>Written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}: {len(inputs.real)} real, {len(inputs.reconstructed)} "
        f"reconstructed and {len(inputs.sampled)} sampled volumes.</p>",
        "<h2>Metrics</h2>", "<table><tr><th>metric</th><th>value</th><th>what it is</th></tr>", rows, "</table>",
    ]
    if inputs.notes:
        parts.append("<p>How the numbers were obtained:</p><ul>")
        parts += [f"<li><code>{e(key)}</code>: {e(note)}</li>" for key, note in inputs.notes.items()]
        parts.append("</ul>")
    for heading, figures in sections:
        if not figures:
            continue
        parts.append(f"<h2>{e(heading)}</h2>")
        kind = "" if figures[0][0].startswith("montage_") else " class=scatter"
        parts += [
            f'<figure{kind}><img src="{e(name)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'
            for name, caption in figures
        ]
    if inputs.recipe_text:
        parts += ["<h2>Recipe</h2>", f"<pre><code>{e(inputs.recipe_text)}</code></pre>"]
    parts.append("<p>Files: " + ", ".join(f'<a href="{e(name)}">{e(name)}</a>' for name in files) + "</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _is_report(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in REPORT_FILES)


def _check_destination(folder: Path, overwrite: bool) -> None:
    """Refuse a destination that holds anything but an old report we were asked to replace."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    if overwrite and _is_report(folder):
        return
    if _is_report(folder):
        raise RunError(f"{folder} already holds a report; reports are never written over. Rebuild it with "
                       "overwrite (--overwrite), or choose another folder.")
    raise RunError(f"{folder} already exists and is not a report; choose another folder for the report.")


def _place(staging: Path, folder: Path, overwrite: bool) -> None:
    """Rename the finished `staging` folder to `folder`, replacing an old report only if asked."""
    _check_destination(folder, overwrite)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.rename(staging, folder)
        return
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    os.rename(folder, old)
    os.rename(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_report(out_dir: str | os.PathLike, inputs: ReportInputs, overwrite: bool = False) -> Path:
    """Write the report folder `out_dir` (see the module docstring); return its ``index.html``."""
    folder = Path(out_dir).expanduser()
    _check_inputs(inputs)
    _check_destination(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        sections = _figures(staging, inputs)
        summary = {key: _number(value) for key, value in inputs.metrics.items()}
        _write_text(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
        files = ["summary.json", "summary.md"]
        if inputs.recipe_text:
            _write_text(staging / "recipe.yaml", inputs.recipe_text)
            files.append("recipe.yaml")
        if inputs.morphology:
            _write_text(staging / "morphology.csv", _morphology_csv(inputs.morphology))
            files.append("morphology.csv")
        _write_text(staging / "summary.md", _markdown(inputs, sections, files))
        _write_text(staging / "index.html", _html(inputs, sections, files))
        _place(staging, folder, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / "index.html"
