"""The report's PNG figures: slice montages, calibration, volume distributions and sharpness.

Volumes are shown in neurological convention after reorienting to RAS with nibabel (the
subject's right on the right, superior up, anterior up in axial slices: the one orientation of
`brainsynth.library.volume_files.mid_slice`), each
windowed from 0 to its own 99.5th percentile, with voxel spacing respected. Figures are drawn
with matplotlib's object API on an Agg canvas, so no display and no global backend change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainsynth.core.errors import DataError
from brainsynth.library.group_effect_size import cohens_d
from brainsynth.library.morphology_calibration import COVERAGE_BAND_SD, calibrate, real_band
from brainsynth.library.volume_files import VIEWS, load_ras, mid_slice, slice_aspect
from brainsynth.library.wasserstein_distance import wasserstein_1d, wasserstein_joint

VARIABLE_LABELS = {
    "ventricular_volume": "Ventricular volume", "brain_volume": "Brain volume",
    "medial_temporal_volume": "Medial temporal volume",
}


@dataclass
class Panel:
    """One volume in a montage: its file and the caption under its name."""

    path: Path
    caption: str = ""


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, format="png", facecolor="white")


def slice_montage(groups: Sequence[tuple[str, Sequence[Panel]]], view: str, path: Path, title: str = "") -> Path:
    """One row per group (e.g. real, reconstructed, sampled), one column per volume, mid-`view` slices."""
    groups = [(label, panels) for label, panels in groups if panels]
    if not groups:
        raise DataError("a slice montage needs at least one volume.")
    columns = max(len(panels) for _, panels in groups)
    figure = Figure(figsize=(2.1 * columns + 0.6, 2.4 * len(groups) + 0.5))
    axes = figure.subplots(len(groups), columns, squeeze=False)
    for row, (label, panels) in enumerate(groups):
        for column in range(columns):
            ax = axes[row][column]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column >= len(panels):
                continue
            volume, zooms = load_ras(panels[column].path)
            plane, aspect = mid_slice(volume, VIEWS[view]), slice_aspect(zooms, VIEWS[view])
            top = float(np.percentile(volume, 99.5)) or 1.0
            ax.imshow(plane, cmap="gray", origin="upper", vmin=min(0.0, float(volume.min())), vmax=top, aspect=aspect,
                      interpolation="nearest")
            name = Path(panels[column].path).name.removesuffix(".gz").removesuffix(".nii")
            ax.set_title(name if not panels[column].caption else f"{name}\n{panels[column].caption}", fontsize=8)
            if view != "sagittal":
                ax.text(0.98, 0.02, "R", color="yellow", fontsize=8, ha="right", va="bottom", transform=ax.transAxes)
            if column == 0:
                ax.set_ylabel(label, fontsize=11)
    figure.suptitle(title or f"{view} mid-slices", fontsize=12)
    figure.tight_layout()
    _save(figure, path)
    return path


def _variable_name(variable: str) -> str:
    return VARIABLE_LABELS.get(variable, variable.replace("_", " ").capitalize())


def _pairs(rows: Sequence[dict], label: str, variable: str) -> np.ndarray:
    key_c, key_m = f"conditioned_{variable}", f"measured_{variable}"
    pairs = [(r[key_c], r[key_m]) for r in rows if r.get("set") == label and key_c in r and key_m in r]
    return np.array(pairs, dtype=np.float64).reshape(-1, 2)


def _measured(rows: Sequence[dict], label: str, variable: str) -> np.ndarray:
    values = np.array([r[f"measured_{variable}"] for r in rows if r.get("set") == label and f"measured_{variable}" in r],
                      dtype=np.float64)
    return values[np.isfinite(values)]


def morphology_scatter(rows: Sequence[dict], variable: str, path: Path) -> Path | None:
    """Calibration: measured vs conditioned `variable` of the samples, real brains in grey, identity
    (dashed), the samples' least-squares line (red) and the real brains' coverage band (shaded).
    None if no sample has both values."""
    samples, real = _pairs(rows, "sample", variable), _pairs(rows, "real", variable)
    if not len(samples):
        return None
    figure = Figure(figsize=(5.2, 5.0))
    ax = figure.subplots()
    everything = np.concatenate([samples, real])
    finite = everything[np.isfinite(everything).all(axis=1)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="0.6", lw=1, label="measured = conditioned")
    band = real_band(real[:, 0], real[:, 1]) if len(real) else None
    if band is not None and finite.size:
        xs = np.linspace(float(finite[:, 0].min()), float(finite[:, 0].max()), 50)
        lower, upper = band.bounds(xs)
        ax.fill_between(xs, lower, upper, color="tab:green", alpha=0.15,
                        label=f"real brains' line ± {COVERAGE_BAND_SD:g} SD (coverage band)")
    if len(real):
        ax.scatter(real[:, 0], real[:, 1], s=14, color="0.55", label=f"real brains (recorded vs measured, n={len(real)})")
    ax.scatter(samples[:, 0], samples[:, 1], s=22, color="tab:blue", label=f"samples (n={len(samples)})")
    fit = calibrate(samples[:, 0], samples[:, 1])
    name = _variable_name(variable)
    if fit is None:
        title = f"{name}: no finite measurement"
    elif fit.fixed is not None:
        title = (f"{name} held fixed at {fit.fixed:.4g} ml (n = {fit.count})\n"
                 f"measured {fit.measured_mean:.4g} ± {fit.measured_sd:.2g} ml (mean ± SD), MAE {fit.mae:.3g} ml")
    else:
        if np.isfinite(fit.slope):
            keep = np.isfinite(samples).all(axis=1)
            xs = np.array([samples[keep, 0].min(), samples[keep, 0].max()])
            ax.plot(xs, fit.slope * xs + fit.intercept, color="tab:red", lw=1.5, label="least-squares fit (samples)")
        rho, slope, intercept = (f"{v:.3g}" if np.isfinite(v) else "n/a" for v in (fit.spearman, fit.slope, fit.intercept))
        title = f"{name} (n = {fit.count})\nρ {rho}, slope {slope}, intercept {intercept} ml, MAE {fit.mae:.3g} ml"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"conditioned {name.lower()} (ml)")
    ax.set_ylabel(f"measured {name.lower()} (ml)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    _save(figure, path)
    return path


def volume_distribution(rows: Sequence[dict], variable: str, path: Path) -> Path | None:
    """Histograms (and Gaussian KDEs) of the measured `variable` of real brains and samples; None without both."""
    real, samples = _measured(rows, "real", variable), _measured(rows, "sample", variable)
    if not len(real) or not len(samples):
        return None
    figure = Figure(figsize=(5.2, 4.0))
    ax = figure.subplots()
    both = np.concatenate([real, samples])
    low, high = float(both.min()), float(both.max())
    pad = 0.1 * (high - low) or 0.05 * abs(high) or 1.0
    bins = np.linspace(low - pad, high + pad, 21)
    grid = np.linspace(low - pad, high + pad, 200)
    for values, colour, label in ((real, "0.45", "real brains"), (samples, "tab:blue", "samples")):
        ax.hist(values, bins=bins, density=True, alpha=0.35, color=colour, label=f"{label} (n={len(values)})")
        if len(values) > 2 and np.ptp(values) > 0:
            ax.plot(grid, stats.gaussian_kde(values)(grid), color=colour, lw=1.5)
    name = _variable_name(variable)
    ax.set_title(f"{name}: Wasserstein distance {wasserstein_1d(real, samples):.3g} ml", fontsize=10)
    ax.set_xlabel(f"measured {name.lower()} (ml)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


def volume_joint(rows: Sequence[dict], variables: Sequence[str], path: Path) -> Path | None:
    """Measured volumes of real brains and samples against each other (the joint distribution); None without both."""
    if len(variables) != 2:
        return None
    points = {}
    for label in ("real", "sample"):
        found = [[r.get(f"measured_{v}", np.nan) for v in variables] for r in rows if r.get("set") == label]
        found = np.array(found, dtype=np.float64).reshape(-1, 2)
        points[label] = found[np.isfinite(found).all(axis=1)]
    if not len(points["real"]) or not len(points["sample"]):
        return None
    joint = wasserstein_joint(points["real"], points["sample"])
    figure = Figure(figsize=(5.2, 4.6))
    ax = figure.subplots()
    ax.scatter(points["real"][:, 0], points["real"][:, 1], s=16, color="0.5", label=f"real brains (n={len(points['real'])})")
    ax.scatter(points["sample"][:, 0], points["sample"][:, 1], s=22, color="tab:blue", alpha=0.8,
               label=f"samples (n={len(points['sample'])})")
    x_name, y_name = (_variable_name(v).lower() for v in variables)
    ax.set_title(f"Joint measured volumes: Wasserstein {joint[0]:.3g} (in real SDs)", fontsize=10)
    ax.set_xlabel(f"measured {x_name} (ml)")
    ax.set_ylabel(f"measured {y_name} (ml)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


def sharpness_strip(rows: Sequence[dict], path: Path) -> Path | None:
    """Each volume's mean gradient magnitude inside the brain, one column per set; None without real and another set."""
    sets = [label for label in ("real", "reconstructed", "sample") if any(r.get("set") == label and "sharpness" in r
                                                                            for r in rows)]
    if "real" not in sets or len(sets) < 2:
        return None
    figure = Figure(figsize=(5.2, 4.0))
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    real_mean = None
    for position, label in enumerate(sets):
        values = np.array([r["sharpness"] for r in rows if r.get("set") == label and "sharpness" in r], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        ax.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=14, alpha=0.8)
        ax.hlines(values.mean(), position - 0.3, position + 0.3, color="k", lw=2)
        real_mean = values.mean() if label == "real" else real_mean
    names = {"real": "real", "reconstructed": "reconstructed", "sample": "sampled"}
    ticks = []
    for label in sets:
        values = np.array([r["sharpness"] for r in rows if r.get("set") == label and "sharpness" in r], dtype=np.float64)
        ratio = np.nanmean(values) / real_mean if real_mean else float("nan")
        ticks.append(f"{names[label]}\n(ratio {ratio:.2f})")
    ax.set_xticks(range(len(sets)), ticks)
    ax.set_ylabel("mean gradient magnitude inside the brain (per mm)")
    ax.set_title("Sharpness (bars: means; ratio to real, 1 = as sharp)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    _save(figure, path)
    return path


def group_effect_strip(rows: Sequence[dict], group: str, variable: str, path: Path) -> Path | None:
    """Measured `variable` by the two levels of `group`, real brains then samples, with means and each set's
    Cohen's d in the labels; None unless both sets hold the same two levels."""
    columns, levels = [], {}
    for label in ("real", "sample"):
        found: dict[float, list[float]] = {}
        for r in rows:
            level, value = r.get(f"conditioned_{group}"), r.get(f"measured_{variable}")
            if r.get("set") == label and level is not None and value is not None and np.isfinite(value):
                found.setdefault(float(level), []).append(float(value))
        levels[label] = found
    if len(levels["real"]) != 2 or sorted(levels["real"]) != sorted(levels["sample"]):
        return None
    low, high = sorted(levels["real"])
    figure = Figure(figsize=(5.6, 4.2))
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    names = {"real": "real", "sample": "samples"}
    for label, colour in (("real", "0.45"), ("sample", "tab:blue")):
        effect = cohens_d(levels[label][low], levels[label][high])
        shown = f"d {effect:.2f}" if effect is not None else "d n/a"
        for level in (low, high):
            values = np.array(levels[label][level])
            position = len(columns)
            ax.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=16, color=colour, alpha=0.8)
            ax.hlines(values.mean(), position - 0.3, position + 0.3, color="k", lw=2)
            columns.append(f"{names[label]}\n{group} {level:g} (n={len(values)})" + (f"\n{shown}" if level == high else ""))
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    name = _variable_name(variable)
    ax.set_ylabel(f"measured {name.lower()} (ml)")
    # Two lines: on one, a long variable name ran past the figure's right edge.
    ax.set_title(f"{name} by {group}\n(bars: means; d: Cohen's d, pooled SD)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    _save(figure, path)
    return path
