"""`evaluate_samples`: every set metric on a set of generated brains against real ones, in one call.

This is what a pipeline's evaluation step calls::

    from brainsynth.library.sample_evaluation import evaluate_samples

    summary, rows, notes = evaluate_samples(
        samples=[".../samples/sample_00000.nii.gz", ...],     # NIfTI paths or 3D arrays/tensors
        references=[".../images/sub-0000.nii.gz", ...],       # real brains on the same grid
        conditioning=[{"ventricular_volume": 31.2, "brain_volume": 1480.0, "age": 70.0}, ...],
        reference_conditioning=[{"ventricular_volume": 26.6, ...}, ...],   # optional
        fid_weights=None,                                     # or a MedicalNet .pth path
    )

* ``summary``: metric name -> value, e.g. ``ms_ssim_diversity``, ``ms_ssim_diversity_real``,
  ``mmd``, ``fid`` (or ``fid_random_features`` without weights), ``sharpness_ratio``, and per
  measured volume ``ventricular_volume_spearman``, ``_slope``, ``_intercept``, ``_mae`` (or, for
  a volume held fixed over the samples, ``_fixed_at``, ``_measured_mean``, ``_measured_sd``,
  ``_mae``), ``_wasserstein``, ``volume_wasserstein_joint`` and, with `reference_conditioning`,
  ``_coverage`` and the same calibration on real brains (``ventricular_volume_real_spearman``,
  ...). See `morphology_preservation` and `sharpness`. NaN only where a metric cannot be
  computed at all (e.g. MS-SSIM on too small a grid).
* ``rows``: one dict per volume, ``set`` ("sample" or "real"), ``name``, ``conditioned_<variable>``
  and ``measured_<variable>`` (ml); the report plots them.
* ``notes``: how each number was obtained (kernel, feature network, pair count).

Every volume is min-max scaled to [0, 1] on its own first, so real volumes read from disk and
decoded samples compare on one scale; all volumes must share one grid, and the affine (from the
first NIfTI, or `affine`) must map voxels to MNI millimetres for the morphology.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from brainsynth.core.errors import RecipeError, RegistryError

from .morphology_summaries import MORPHOLOGY_VARIABLES
from .volume_sets import load_volume_set

DEFAULT_SET_METRICS = ("ms_ssim_diversity", "mmd", "fid", "sharpness", "morphology_preservation")


class SampleEvaluation(NamedTuple):
    """The result of `evaluate_samples`: summary values, per-volume rows, and notes."""

    summary: dict[str, float]
    rows: list[dict[str, Any]]
    notes: dict[str, str]


def default_metric_blocks(fid_weights: str | None = None, with_morphology: bool = True) -> list[dict]:
    """The recipe blocks of the default set metrics (`fid_weights` goes to ``fid``)."""
    blocks = [{"name": name} for name in DEFAULT_SET_METRICS if with_morphology or name != "morphology_preservation"]
    for block in blocks:
        if block["name"] == "fid" and fid_weights is not None:
            block["weights"] = str(fid_weights)
    return blocks


def build_set_metrics(blocks: Sequence[Mapping[str, Any]], registry=None) -> list[Any]:
    """Build the named set metrics (kind ``set_metric``) through the registry."""
    if registry is None:
        from brainsynth.core import plugins

        registry = plugins.registry()
    metrics = []
    for index, block in enumerate(blocks):
        try:
            component = registry.get("set_metric", block.get("name"))
        except RegistryError as exc:
            raise RecipeError(f"evaluation.metrics.{index}.name: {exc}") from None
        params = component.schema.validate(
            block, path=("evaluation", "metrics", index), owner=f"set_metric '{component.name}'", ignore=("name",)
        )
        metrics.append(component.build(params))
    return metrics


def evaluate_samples(
    samples: Sequence[Any],
    references: Sequence[Any],
    conditioning: Sequence[Mapping[str, Any]] | None,
    affine: np.ndarray | torch.Tensor | None = None,
    *,
    fid_weights: str | None = None,
    reference_conditioning: Sequence[Mapping[str, Any]] | None = None,
    sample_names: Sequence[str] | None = None,
    reference_names: Sequence[str] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    registry=None,
    log: Callable[[str], None] | None = None,
) -> SampleEvaluation:
    """Evaluate generated brains against real ones (see the module docstring).

    `metrics` are recipe blocks of set metrics (default: `default_metric_blocks`, with
    ``morphology_preservation`` when the conditioning holds a volume or the volumes have an
    affine to measure them in); `log` receives one
    progress line per metric.
    """
    sample_set = load_volume_set(samples, label="sample", affine=affine, conditioning=conditioning, names=sample_names)
    reference_set = load_volume_set(
        references, label="real", affine=affine if affine is not None else sample_set.affine,
        conditioning=reference_conditioning, names=reference_names,
    )
    if sample_set.spatial_shape != reference_set.spatial_shape:
        raise RecipeError(
            f"samples have shape {sample_set.spatial_shape} but real brains {reference_set.spatial_shape}; give real "
            "brains in the space the tokenizer was trained in (the same ROI and spacing)."
        )
    conditioned = sample_set.conditioning is not None and any(
        variable in row for row in sample_set.conditioning for variable in MORPHOLOGY_VARIABLES
    )
    # unconditioned samples still have measured volumes whose distribution is compared with the real brains'
    measurable = conditioned or sample_set.affine is not None
    blocks = metrics if metrics is not None else default_metric_blocks(fid_weights, with_morphology=measurable)
    summary: dict[str, float] = {}
    notes: dict[str, str] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for index, name in enumerate(sample_set.names):
        row = {"set": "sample", "name": name}
        row.update({f"conditioned_{k}": v for k, v in (sample_set.conditioning or [{}] * len(sample_set))[index].items()})
        rows[("sample", name)] = row
    for metric in build_set_metrics(blocks, registry):
        start = time.perf_counter()
        result = metric(sample_set, reference_set)
        summary.update({key: float(value) for key, value in result.values.items()})
        notes.update(result.notes)
        for row in result.rows:
            rows.setdefault((row["set"], row["name"]), {}).update(row)
        if log is not None:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in result.values.items())
            log(f"{metric.name}: {shown} ({time.perf_counter() - start:.1f} s)")
    return SampleEvaluation(summary, list(rows.values()), notes)
