"""What the tokenizer keeps: real brains measured again after encode-quantise-decode.

The prior can only condition what the tokenizer keeps, so the reconstructions' sharpness and
morphology are the ceiling of the samples'. Shared by the prior's ``evaluate`` mode and the
``brainsynth report --reconstructed`` command:

* ``sharpness_reconstructed_ratio``: the reconstructions' mean gradient magnitude inside the
  brain over the same real brains' (see `sharpness`; below 1, the tokenizer blurs);
* ``<variable>_reconstructed_spearman``, ``_slope``, ``_intercept``, ``_mae``: the
  reconstructions' measured volumes (with the real brains' tissue contrast, as samples are
  measured) against the real brains' recorded ones, read through the real brains' instrument
  line as the samples are (see `morphology_preservation`);
* ``<variable>_kept_spearman``, ``_slope``, ``_mae``: the same brains' measured volumes after the
  tokenizer against before it: what the tokenizer itself keeps, whatever the measurement's error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .morphology_calibration import calibrate
from .morphology_summaries import (
    MORPHOLOGY_VARIABLES,
    describe_instrument,
    measure_set,
    read_through_instrument,
    set_contrast,
    summarise_calibration,
)
from .volume_sharpness import set_sharpness, sharpness_ratio
from .volume_sets import SetMetricResult, load_volume_set


def evaluate_reconstructions(
    references: Sequence[str | os.PathLike],
    reconstructed: Sequence[str | os.PathLike],
    conditioning: Sequence[Mapping[str, Any]] | None,
    names: Sequence[str],
) -> SetMetricResult:
    """Sharpness of `reconstructed` against `references` (paired, same order), and their volumes against `conditioning`."""
    rows_in = list(conditioning) if conditioning else None
    real = load_volume_set(list(references), label="real", conditioning=rows_in, names=names)
    volumes = load_volume_set(list(reconstructed), label="reconstructed", conditioning=rows_in, names=names)
    sharpness = set_sharpness(volumes)
    values = {"sharpness_reconstructed_ratio": sharpness_ratio(sharpness, set_sharpness(real))}
    rows = [{"set": "reconstructed", "name": n, "sharpness": float(v)} for n, v in zip(names, sharpness)]
    notes = {"sharpness_reconstructed_ratio": "mean gradient magnitude inside the brain, real brains after the "
             "tokenizer / the same brains before: 1 = as sharp, < 1 blurred by the tokenizer"}
    variables = [v for v in MORPHOLOGY_VARIABLES if volumes.conditioning and any(v in r for r in volumes.conditioning)]
    if variables and len(volumes) >= 2:
        contrast = set_contrast(real)
        measured = measure_set(volumes, variables, contrast)
        before = measure_set(real, variables, contrast)
        lines = read_through_instrument(before, [measured, before], variables)
        for row, extra in zip(rows, measured):
            row.update(extra)
        for variable in variables:
            for key, value in summarise_calibration(measured, [variable], "").items():
                values[key.replace(variable, f"{variable}_reconstructed", 1)] = value
            kept = calibrate([b[f"measured_{variable}"] for b in before], [a[f"measured_{variable}"] for a in measured])
            if kept is not None and kept.fixed is None:
                values.update({f"{variable}_kept_{name}": getattr(kept, name) for name in ("spearman", "slope", "mae")})
        notes["morphology_reconstructed"] = (
            f"measure_morphology on the {len(volumes)} real brains after encode-quantise-decode by the tokenizer "
            "(with the real brains' tissue contrast) vs their table values: the ceiling of the samples' rho"
            + (f"; read through the real brains' instrument lines ({describe_instrument(lines)})" if lines else "")
        )
    return SetMetricResult(values, rows=rows, notes=notes)
