"""Does a diagnosis carry its signature? Cohen's d of a measured volume between two groups.

A prior conditioned on a categorical variable such as the demo cohort's ``diagnosis`` should make
samples whose measured volumes differ between its two levels as much as real brains' do. The
effect size is Cohen's d with the pooled SD, ``(mean of the higher level - mean of the lower
level) / pooled SD``, computed for the samples grouped by the value they were conditioned on and
for the real brains grouped by their table value; the ratio samples / real is 1 when the samples
carry the real effect in full, below 1 when it is weakened, above 1 when exaggerated. A group
with fewer than two finite values, or no spread at all, has no d: it is reported in words, never
as NaN.

Each d comes with its large-sample standard error (``_se``: sqrt((n1 + n2) / (n1 n2) + d^2 /
(2 (n1 + n2))), Hedges and Olkin) and the ratio with the delta-method error of a quotient of the
two (``_ratio_se``). They say how far a small set lets the number move: the demo's 24 real val
brains, 10 of them diagnosed, give a real d of -1.68 with an SE of 0.48. Samples drawn several
to a condition are not independent, so their SE is a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def cohens_d(first: Sequence[float], second: Sequence[float]) -> float | None:
    """(mean(second) - mean(first)) / pooled SD of the finite values; None with fewer than 2 in a group or no spread."""
    a, b = _finite(first), _finite(second)
    if a.size < 2 or b.size < 2:
        return None
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if not pooled > 0:
        return None
    return float((b.mean() - a.mean()) / pooled)


def cohens_d_standard_error(d: float, first_size: int, second_size: int) -> float:
    """Large-sample standard error of Cohen's d between groups of these sizes (Hedges and Olkin)."""
    total = first_size + second_size
    return float(np.sqrt(total / (first_size * second_size) + d * d / (2.0 * total)))


def _groups(rows: Sequence[dict], group: str, variable: str) -> dict[float, list[float]]:
    found: dict[float, list[float]] = {}
    for row in rows:
        level, value = row.get(f"conditioned_{group}"), row.get(f"measured_{variable}")
        if level is not None and value is not None and np.isfinite(level):
            found.setdefault(float(level), []).append(float(value))
    return found


def group_effects(
    sample_rows: Sequence[dict], real_rows: Sequence[dict], group: str, variables: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """``<group>_effect_<variable>_samples``, ``_real`` and ``_ratio``, and a note saying how, or why not.

    Rows are `morphology_preservation`'s: ``conditioned_<group>`` (a sample's condition, a real
    brain's table value) and ``measured_<variable>``. Nothing is returned (not even a note) when no
    row carries the group; a group without exactly two levels in each set, the same two, is
    explained in the note.
    """
    if not any(f"conditioned_{group}" in row for row in [*sample_rows, *real_rows]):
        return {}, {}
    values, reasons = {}, []
    for variable in variables:
        sets = {"samples": _groups(sample_rows, group, variable), "real": _groups(real_rows, group, variable)}
        levels = {name: sorted(found) for name, found in sets.items()}
        if any(len(found) != 2 for found in levels.values()) or levels["samples"] != levels["real"]:
            shown = "; ".join(f"{name}: {', '.join(f'{v:g}' for v in found) or 'none'}" for name, found in levels.items())
            reasons.append(f"{variable}: not computable, each set needs the same two levels of {group} ({shown})")
            continue
        low, high = levels["real"]
        effects = {name: cohens_d(found[low], found[high]) for name, found in sets.items()}
        for name, effect in effects.items():
            if effect is None:
                sizes = ", ".join(f"{len(sets[name][level])} at {level:g}" for level in (low, high))
                reasons.append(f"{variable}: not computable for the {name}, a group has fewer than 2 values or no "
                               f"spread ({sizes})")
            else:
                values[f"{group}_effect_{variable}_{name}"] = effect
                values[f"{group}_effect_{variable}_{name}_se"] = cohens_d_standard_error(
                    effect, _finite(sets[name][low]).size, _finite(sets[name][high]).size
                )
        if effects["samples"] is not None and effects["real"] not in (None, 0.0):
            ratio = effects["samples"] / effects["real"]
            values[f"{group}_effect_{variable}_ratio"] = ratio
            if effects["samples"] != 0.0:
                relative = [values[f"{group}_effect_{variable}_{name}_se"] / abs(effects[name]) for name in ("samples", "real")]
                values[f"{group}_effect_{variable}_ratio_se"] = abs(ratio) * float(np.hypot(*relative))
    note = (f"Cohen's d (pooled SD) of each measured volume, {group} at its higher level against its lower, samples "
            f"grouped by their condition, real brains by their table value; ratio samples / real (1 = the real "
            f"effect in full); _se: large-sample standard errors (a lower bound for samples drawn several to a "
            f"condition)")
    if reasons:
        note += ". " + "; ".join(reasons)
    return values, {f"{group}_effect": note}
