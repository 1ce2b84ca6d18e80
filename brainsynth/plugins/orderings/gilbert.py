"""The "gilbert" generalised Hilbert curve exactly as the original BrainSynth walks it.

The original orders tokens with J. Červený's gilbert curve (``gilbert2d``/``gilbert3d``). Our
default `hilbert_walk` repairs gilbert's diagonal steps on awkward sizes, so it visits some grids
in another order; a prior trained by the original must read tokens in gilbert's own order, which
this module reproduces split for split: a box (origin, major vector a, minor vectors b, c) is cut
in halves along a when it is long, else into three parts around one minor axis or five parts
around both, preferring even cut sizes, and each part is walked the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _length(v: np.ndarray) -> int:
    return int(abs(v.sum()))


def _half(v: np.ndarray, length: int) -> np.ndarray:
    """Floor half of an axis vector, bumped by one step when that half is odd (and length > 2)."""
    half = v // 2
    if _length(half) % 2 and length > 2:
        half = half + np.sign(v)
    return half


def _line(origin: np.ndarray, step: np.ndarray, count: int, out: list) -> None:
    out.extend(origin + i * step for i in range(count))


def _walk2d(p: np.ndarray, a: np.ndarray, b: np.ndarray, out: list) -> None:
    w, h = _length(a), _length(b)
    da, db = np.sign(a), np.sign(b)
    if h == 1:
        return _line(p, da, w, out)
    if w == 1:
        return _line(p, db, h, out)
    if 2 * w > 3 * h:  # long box: two halves along a
        a2 = _half(a, w)
        _walk2d(p, a2, b, out)
        _walk2d(p + a2, a - a2, b, out)
        return
    a2, b2 = a // 2, _half(b, h)
    _walk2d(p, b2, a2, out)
    _walk2d(p + b2, a, b - b2, out)
    _walk2d(p + (a - da) + (b2 - db), -b2, -(a - a2), out)


def _walk3d(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, out: list) -> None:
    w, h, d = _length(a), _length(b), _length(c)
    da, db, dc = np.sign(a), np.sign(b), np.sign(c)
    if h == 1 and d == 1:
        return _line(p, da, w, out)
    if w == 1 and d == 1:
        return _line(p, db, h, out)
    if w == 1 and h == 1:
        return _line(p, dc, d, out)
    a2, b2, c2 = _half(a, w), _half(b, h), _half(c, d)
    if 2 * w > 3 * h and 2 * w > 3 * d:  # long box: two halves along a
        _walk3d(p, a2, b, c, out)
        _walk3d(p + a2, a - a2, b, c, out)
    elif 3 * h > 4 * d:  # flat in c: three parts around b
        _walk3d(p, b2, c, a2, out)
        _walk3d(p + b2, a, b - b2, c, out)
        _walk3d(p + (a - da) + (b2 - db), -b2, c, -(a - a2), out)
    elif 3 * d > 4 * h:  # flat in b: three parts around c
        _walk3d(p, c2, a2, b, out)
        _walk3d(p + c2, a, b, c - c2, out)
        _walk3d(p + (a - da) + (c2 - dc), -c2, -(a - a2), b, out)
    else:  # cube-like: five parts
        _walk3d(p, b2, c2, a2, out)
        _walk3d(p + b2, c, a2, b - b2, out)
        _walk3d(p + (b2 - db) + (c - dc), a, -b2, -(c - c2), out)
        _walk3d(p + (a - da) + b2 + (c - dc), -c, -(a - a2), b - b2, out)
        _walk3d(p + (a - da) + (b2 - db), -b2, c2, -(a - a2), out)


def gilbert_walk(shape: Sequence[int]) -> np.ndarray:
    """Coordinates [L, ndim] of the gilbert curve over a 2D or 3D grid (x along the first axis).

    The major axis is the longest one, ties going to the earlier axis, as in the original.
    """
    shape = tuple(int(s) for s in shape)
    eye = np.eye(len(shape), dtype=np.int64)
    cells: list[np.ndarray] = []
    origin = np.zeros(len(shape), dtype=np.int64)
    if len(shape) == 2:
        w, h = shape
        a, b = (eye[0] * w, eye[1] * h) if w >= h else (eye[1] * h, eye[0] * w)
        _walk2d(origin, a, b, cells)
    elif len(shape) == 3:
        w, h, d = shape
        if w >= h and w >= d:
            axes = (eye[0] * w, eye[1] * h, eye[2] * d)
        elif h >= w and h >= d:
            axes = (eye[1] * h, eye[0] * w, eye[2] * d)
        else:
            axes = (eye[2] * d, eye[0] * w, eye[1] * h)
        _walk3d(origin, *axes, cells)
    else:
        raise ValueError(f"gilbert curve: expected a 2D or 3D grid, got shape {shape}")
    return np.stack(cells)
