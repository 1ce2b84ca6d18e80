"""A generalised Hilbert curve for any 2D or 3D grid, with unit steps only.

The curve is built like the "gilbert" generalised Hilbert curve: a box is walked from one corner
to the corner at the far end of its major axis, by splitting it into sub-boxes that are walked the
same way (two halves along the major axis for long boxes; three parts around one minor axis; five
parts around both minor axes for cube-like boxes, which for power-of-two cubes gives the classic
Hilbert curve). Unlike gilbert, every split is checked with a parity rule before it is used, so the
walk never takes a diagonal step: a box can be walked corner-to-corner along its major axis only if
that axis has even length or the box has an odd number of cells (checkerboard colouring), and a box
of major length 1 must be a single cell. Splits that break the rule are replaced by the nearest
split sizes that keep it. The top-level major axis is the longest axis for which the rule holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from brainsynth.core.errors import RecipeError
from brainsynth.core.ordering import DEFAULT_TRANSFORMATION_ORDER, Ordering, Transformation

from .gilbert import gilbert_walk

Shape3 = tuple[int, int, int]


def _walkable(major: int, minor1: int, minor2: int) -> bool:
    """Can a box be walked with unit steps from a corner to the far corner of its major axis?"""
    if min(major, minor1, minor2) < 1:
        return False
    if minor1 == 1 and minor2 == 1:
        return True
    if major == 1:
        return False
    return major % 2 == 0 or (major * minor1 * minor2) % 2 == 1


def _split_points(n: int, prefer_even: bool) -> list[int]:
    """Candidate sizes of the first part when splitting a length n, nearest to half first."""
    half = n // 2
    first = half + 1 if prefer_even and half % 2 == 1 and n > 2 else half
    candidates = [first, half, half + 1, half - 1, half + 2, half - 2]
    seen: list[int] = []
    for c in candidates:
        if 1 <= c <= n - 1 and c not in seen:
            seen.append(c)
    return seen


def _parts(kind: str, w: int, h: int, d: int, w2: int, h2: int, d2: int) -> list[Shape3]:
    """(major, minor1, minor2) lengths of the sub-boxes of one split (see `_emit`)."""
    if kind == "a":
        return [(w2, h, d), (w - w2, h, d)]
    if kind == "b":
        return [(h2, w2, d), (w, h - h2, d), (h2, w - w2, d)]
    if kind == "c":
        return [(d2, w2, h), (w, h, d - d2), (d2, w - w2, h)]
    return [(h2, d2, w2), (d, w2, h - h2), (w, h2, d - d2), (d, w - w2, h - h2), (h2, d2, w - w2)]


def _preferred_kinds(w: int, h: int, d: int) -> list[str]:
    if 2 * w > 3 * h and 2 * w > 3 * d:
        return ["a", "all", "b", "c"]
    if 3 * h > 4 * d:
        return ["b", "all", "c", "a"]
    if 3 * d > 4 * h:
        return ["c", "all", "b", "a"]
    return ["all", "b", "c", "a"]


@lru_cache(maxsize=None)
def _plan(w: int, h: int, d: int) -> tuple[str, int, int, int] | None:
    """The split used for a w x h x d box (major, minor1, minor2), or None if none keeps unit steps."""
    if not _walkable(w, h, d):
        return None
    if h == 1 and d == 1:
        return ("line", 0, 0, 0)
    for kind in _preferred_kinds(w, h, d):
        w_options = _split_points(w, prefer_even=kind == "a")
        h_options = _split_points(h, prefer_even=True) if kind in ("b", "all") else [0]
        d_options = _split_points(d, prefer_even=True) if kind in ("c", "all") else [0]
        for w2 in w_options:
            for h2 in h_options:
                for d2 in d_options:
                    parts = _parts(kind, w, h, d, w2, h2, d2)
                    if all(_plan(*part) is not None for part in parts):
                        return (kind, w2, h2, d2)
    return None


def _emit(origin: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, out: list) -> None:
    """Append the cells of the box (origin; axis vectors a, b, c) in walking order."""
    w, h, d = (int(np.abs(v).sum()) for v in (a, b, c))
    kind, w2, h2, d2 = _plan(w, h, d)
    da, db, dc = np.sign(a), np.sign(b), np.sign(c)
    if kind == "line":
        out.extend(origin + i * da for i in range(w))
        return
    a2, b2, c2 = w2 * da, h2 * db, d2 * dc
    if kind == "a":
        _emit(origin, a2, b, c, out)
        _emit(origin + a2, a - a2, b, c, out)
    elif kind == "b":
        _emit(origin, b2, a2, c, out)
        _emit(origin + b2, a, b - b2, c, out)
        _emit(origin + (a - da) + (b2 - db), -b2, -(a - a2), c, out)
    elif kind == "c":
        _emit(origin, c2, a2, b, out)
        _emit(origin + c2, a, b, c - c2, out)
        _emit(origin + (a - da) + (c2 - dc), -c2, -(a - a2), b, out)
    else:
        _emit(origin, b2, c2, a2, out)
        _emit(origin + b2, c, a2, b - b2, out)
        _emit(origin + (b2 - db) + (c - dc), a, -b2, -(c - c2), out)
        _emit(origin + (a - da) + b2 + (c - dc), -c, -(a - a2), b - b2, out)
        _emit(origin + (a - da) + (b2 - db), -b2, c2, -(a - a2), out)


def hilbert_walk(shape: Sequence[int]) -> np.ndarray:
    """Coordinates [L, ndim] of a generalised Hilbert curve over a 2D or 3D grid; unit steps only.

    The curve starts at the origin. Its major axis is the longest axis that allows a unit-step
    walk (ties go to the first axis); the minor axes keep their order.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    sizes = shape + (1,) * (3 - ndim)
    by_length = sorted(range(3), key=lambda axis: (-sizes[axis], axis))
    for major in by_length:
        minors = [axis for axis in range(3) if axis != major]
        if _plan(sizes[major], sizes[minors[0]], sizes[minors[1]]) is None:
            continue
        eye = np.eye(3, dtype=np.int64)
        vectors = [eye[axis] * sizes[axis] for axis in (major, *minors)]
        cells: list[np.ndarray] = []
        _emit(np.zeros(3, dtype=np.int64), *vectors, cells)
        return np.stack(cells)[:, :ndim]
    raise ValueError(f"no unit-step generalised Hilbert walk found for a grid of shape {shape}")


class HilbertCurve(Ordering):
    """Generalised Hilbert curve (2D/3D, any shape, unit steps) after the configured transforms.

    `curve`: ``unit_step`` (default) never steps diagonally; ``gilbert`` is the original
    BrainSynth's curve exactly (it steps diagonally on some odd sizes, and visits e.g. the paper's
    10x14x10 grid in another order), for priors trained by the original.
    """

    def __init__(
        self,
        transpositions_axes: list[list[int]] | None = None,
        rot90_axes: list[tuple[int, int]] | None = None,
        reflected_spatial_dims: list[bool] | None = None,
        transformation_order: list[Transformation] = list(DEFAULT_TRANSFORMATION_ORDER),
        curve: Literal["unit_step", "gilbert"] = "unit_step",
        *,
        spatial_shape: tuple[int, ...],
    ) -> None:
        if curve not in ("unit_step", "gilbert"):
            raise RecipeError(f"ordering.curve: expected 'unit_step' or 'gilbert', got {curve!r}.")
        self.curve = curve
        super().__init__(spatial_shape, transpositions_axes, rot90_axes, reflected_spatial_dims, transformation_order)

    def walk(self, shape: tuple[int, ...]) -> np.ndarray:
        return gilbert_walk(shape) if self.curve == "gilbert" else hilbert_walk(shape)
