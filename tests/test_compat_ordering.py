"""Orderings that read tokens exactly as the original BrainSynth did (reference §4.7).

`original_order` re-implements the original's `Ordering` build (template, transforms, walk,
template lookup) for raster, S-curve and random; the gilbert sequences were produced by the
original's ``gilbert2d``/``gilbert3d`` and are written out here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from brainsynth.core.plugins import registry
from brainsynth.plugins.orderings.gilbert import gilbert_walk

PUBLISHED = {"rot90_axes": [[0, 1]], "transpositions_axes": [[2, 0, 1]], "transformation_order": ["rotate_90", "transpose"]}

GILBERT_3x4x2 = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1), (1, 0, 0), (2, 0, 0), (2, 0, 1),
                 (2, 1, 1), (2, 1, 0), (2, 2, 0), (2, 2, 1), (2, 3, 1), (2, 3, 0), (1, 3, 0), (1, 3, 1), (1, 2, 1), (1, 2, 0),
                 (0, 2, 0), (0, 2, 1), (0, 3, 1), (0, 3, 0)]
GILBERT_3x5 = [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (0, 1), (0, 2), (1, 2), (2, 2), (2, 3), (2, 4), (1, 4), (1, 3), (0, 3), (0, 4)]
GILBERT_10x14x10_SHA256 = "a36107ebaef1c4ad"
"""First 16 hex digits of sha256 over the original gilbert3d(10, 14, 10) coordinates as int64 [1400, 3]."""


def original_order(shape, kind, seed=None, rot90_axes=(), transpositions_axes=(), transformation_order=()):
    """The original's Ordering: transform a template of row-major indices, walk it, look the walk up."""
    template = np.arange(np.prod(shape)).reshape(shape)
    for step in transformation_order:
        if step == "transpose":
            for axes in transpositions_axes:
                template = np.transpose(template, axes=axes)
        elif step == "rotate_90":
            for axes in rot90_axes:
                template = np.rot90(template, axes=axes)
    rows, cols, depths = template.shape
    idx = []
    for r in range(rows):
        col_range = range(cols) if kind != "s_curve" or r % 2 == 0 else range(cols - 1, -1, -1)
        for c in col_range:
            depth_range = range(depths) if kind != "s_curve" or c % 2 == 0 else range(depths - 1, -1, -1)
            for d in depth_range:
                idx.append((r, c, d))
    idx = np.array(idx)
    if kind == "random":
        np.random.seed(seed)  # what set_determinism(seed + rank) did, on rank 0
        np.random.shuffle(idx)
    return np.array([template[tuple(e)] for e in idx])


def build(name, shape=(10, 14, 10), **params):
    block = {"name": name, **params}
    component = registry().get("ordering", name)
    validated = component.schema.validate(block, ("ordering",), owner="ordering", ignore=("name",))
    return component.build(validated, spatial_shape=shape)


def test_gilbert_walk_is_the_original_curve():
    assert [tuple(c) for c in gilbert_walk((3, 4, 2))] == GILBERT_3x4x2
    assert [tuple(c) for c in gilbert_walk((3, 5))] == GILBERT_3x5
    walk = gilbert_walk((10, 14, 10)).astype(np.int64)
    assert hashlib.sha256(np.ascontiguousarray(walk).tobytes()).hexdigest()[:16] == GILBERT_10x14x10_SHA256
    assert len({tuple(c) for c in walk}) == 1400


def test_hilbert_curve_option_reads_the_original_order_and_keeps_the_default():
    gilbert = build("hilbert_curve", curve="gilbert", **PUBLISHED)
    default = build("hilbert_curve", **PUBLISHED)
    template = np.rot90(np.arange(1400).reshape(10, 14, 10), axes=(0, 1)).transpose(2, 0, 1)
    expected = np.array([template[tuple(c)] for c in gilbert_walk(template.shape)])
    np.testing.assert_array_equal(gilbert.sequence_order.numpy(), expected)
    assert not np.array_equal(default.sequence_order.numpy(), expected)  # why the option exists
    with pytest.raises(Exception, match="curve"):
        build("hilbert_curve", curve="peano")


@pytest.mark.parametrize("kind", ["raster_scan", "s_curve", "random"])
def test_raster_s_curve_and_seeded_random_match_the_original(kind):
    params = dict(PUBLISHED, seed=4) if kind == "random" else PUBLISHED
    ours = build(kind, **params).sequence_order.numpy()
    expected = original_order((10, 14, 10), kind, seed=4, **PUBLISHED)
    np.testing.assert_array_equal(ours, expected)
    if kind == "random":
        assert not np.array_equal(ours, original_order((10, 14, 10), kind, seed=5, **PUBLISHED))
