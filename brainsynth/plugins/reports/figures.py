"""The report's PNG figures: slice montages and conditioned-vs-measured volume plots.

Volumes are shown in neurological convention after reorienting to RAS with nibabel (the
subject's right on the right, superior up, anterior up in axial slices), each
windowed from 0 to its own 99.5th percentile, with voxel spacing respected. Figures are drawn
with matplotlib's object API on an Agg canvas, so no display and no global backend change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainsynth.core.errors import DataError
from brainsynth.plugins.metrics.morphology_preservation import agreement

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
"""View name -> RAS axis the slice is taken across."""

VARIABLE_LABELS = {"ventricular_volume": "Ventricular volume", "brain_volume": "Brain volume"}


@dataclass
class Panel:
    """One volume in a montage: its file and the caption under its name."""

    path: Path
    caption: str = ""


def load_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The volume at `path` reoriented to RAS, and its voxel sizes (mm)."""
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        array = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"{path}: cannot read this volume for the report ({exc}).") from None
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: the report shows 3D volumes, this one has shape {array.shape}.")
    return array, np.asarray(image.header.get_zooms()[:3], dtype=np.float64)


def mid_slice(volume: np.ndarray, zooms: np.ndarray, view: str) -> tuple[np.ndarray, float]:
    """The middle slice for `view`, transposed for ``imshow(origin="lower")``, and its aspect."""
    axis = AXES[view]
    plane = np.take(volume, volume.shape[axis] // 2, axis=axis)
    rows, cols = [a for a in range(3) if a != axis][::-1]  # vertical: the later RAS axis (S or A)
    return plane.T, float(zooms[rows] / zooms[cols])


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
            plane, aspect = mid_slice(volume, zooms, view)
            top = float(np.percentile(volume, 99.5)) or 1.0
            ax.imshow(plane, cmap="gray", origin="lower", vmin=min(0.0, float(volume.min())), vmax=top, aspect=aspect,
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


def morphology_scatter(rows: Sequence[dict], variable: str, path: Path) -> Path | None:
    """Measured vs conditioned `variable` of the samples (and of real brains, grey); None if no data."""
    key_c, key_m = f"conditioned_{variable}", f"measured_{variable}"
    points = {
        label: [(r[key_c], r[key_m]) for r in rows if r.get("set") == label and key_c in r and key_m in r]
        for label in ("real", "sample")
    }
    if not points["sample"]:
        return None
    figure = Figure(figsize=(5.2, 5.0))
    ax = figure.subplots()
    everything = np.array([p for pairs in points.values() for p in pairs], dtype=np.float64)
    finite = everything[np.isfinite(everything).all(axis=1)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="0.6", lw=1, label="measured = conditioned")
    if points["real"]:
        real = np.array(points["real"], dtype=np.float64)
        ax.scatter(real[:, 0], real[:, 1], s=14, color="0.65", label=f"real brains (recorded vs measured, n={len(real)})")
    samples = np.array(points["sample"], dtype=np.float64)
    ax.scatter(samples[:, 0], samples[:, 1], s=22, color="tab:blue", label=f"samples (n={len(samples)})")
    fit = agreement(samples[:, 0], samples[:, 1])
    keep = np.isfinite(samples).all(axis=1)
    if np.isfinite(fit["slope"]):
        slope, intercept = np.polyfit(samples[keep, 0], samples[keep, 1], 1)
        xs = np.array([samples[keep, 0].min(), samples[keep, 0].max()])
        ax.plot(xs, slope * xs + intercept, color="tab:red", lw=1.5, label="least-squares fit (samples)")
    name = VARIABLE_LABELS.get(variable, variable.replace("_", " ").capitalize())
    ax.set_title(f"{name}: ρ = {fit['spearman']:.2f}, slope = {fit['slope']:.2f} (n = {int(fit['count'])})", fontsize=11)
    ax.set_xlabel(f"conditioned {name.lower()} (ml)")
    ax.set_ylabel(f"measured {name.lower()} (ml)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    _save(figure, path)
    return path
