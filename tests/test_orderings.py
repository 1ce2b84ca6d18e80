"""Orderings: equal to MONAI's, round trips, the published UKB order, Hilbert unit steps, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.utils.ordering import Ordering as MonaiOrdering

from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.core.plugins import registry
from brainsynth.plugins.orderings.hilbert_curve import HilbertCurve
from brainsynth.plugins.orderings.random import RandomOrder
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.orderings.s_curve import SCurve
from brainsynth.plugins.orderings.hilbert_curve import hilbert_walk

CLASSES = {"raster_scan": RasterScan, "s_curve": SCurve, "random": RandomOrder, "hilbert_curve": HilbertCurve}

MONAI_CASES = [
    ((4, 5), {}),
    ((5, 3), {"transpositions_axes": [[1, 0]], "reflected_spatial_dims": [True, False]}),
    ((3, 4, 5), {}),
    ((3, 4, 5), {"rot90_axes": [(0, 1)], "transpositions_axes": [[2, 0, 1]], "transformation_order": ["rotate_90", "transpose"]}),
    ((4, 3, 5), {"reflected_spatial_dims": [False, True, True], "rot90_axes": [(1, 2), (0, 2)],
                 "transformation_order": ["reflect", "rotate_90"]}),
    ((3, 5, 4), {"transpositions_axes": [[1, 2, 0], [0, 2, 1]], "rot90_axes": [(0, 1)], "reflected_spatial_dims": [True, False, False],
                 "transformation_order": ["transpose", "reflect", "rotate_90"]}),
]


def _monai(kind: str, shape, options: dict, seed: int) -> np.ndarray:
    np.random.seed(seed)
    return MonaiOrdering(
        ordering_type=kind,
        spatial_dims=len(shape),
        dimensions=(1, *shape),
        reflected_spatial_dims=tuple(options["reflected_spatial_dims"]) if "reflected_spatial_dims" in options else None,
        transpositions_axes=tuple(tuple(a) for a in options["transpositions_axes"]) if "transpositions_axes" in options else None,
        rot90_axes=tuple(tuple(a) for a in options["rot90_axes"]) if "rot90_axes" in options else None,
        transformation_order=tuple(options.get("transformation_order", ("transpose", "rotate_90", "reflect"))),
    ).get_sequence_ordering()


@pytest.mark.parametrize("kind", ["raster_scan", "s_curve", "random"])
@pytest.mark.parametrize("shape, options", MONAI_CASES)
def test_sequence_order_equals_monai(kind, shape, options):
    extra = {"seed": 7} if kind == "random" else {}
    ours = CLASSES[kind](**options, **extra, spatial_shape=shape)
    np.testing.assert_array_equal(ours.sequence_order.numpy(), _monai(kind, shape, options, seed=7))
    np.testing.assert_array_equal(ours.revert_order.numpy(), np.argsort(ours.sequence_order.numpy()))


def test_published_ukb_ordering():
    """rot90 on (0,1) then transpose (2,0,1) on 10x14x10: a2 ascending, a1 descending, a0 ascending (fastest)."""
    options = {"rot90_axes": [(0, 1)], "transpositions_axes": [[2, 0, 1]], "transformation_order": ["rotate_90", "transpose"]}
    ordering = RasterScan(**options, spatial_shape=(10, 14, 10))
    expected = [(a0, a1, a2) for a2 in range(10) for a1 in reversed(range(14)) for a0 in range(10)]
    assert ordering.coordinates().tolist() == [list(c) for c in expected]
    np.testing.assert_array_equal(ordering.sequence_order.numpy(), _monai("raster_scan", (10, 14, 10), options, 0))


@pytest.mark.parametrize("kind", sorted(CLASSES))
@pytest.mark.parametrize("shape", [(3, 4, 5), (5, 2), (2, 3, 1)])
def test_order_then_revert_is_identity(kind, shape):
    ordering = CLASSES[kind](rot90_axes=[(0, 1)], reflected_spatial_dims=[True] + [False] * (len(shape) - 1), spatial_shape=shape)
    grid = torch.randint(0, 100, (2, *shape))
    sequence = ordering.sequence(grid)
    assert sequence.shape == (2, int(np.prod(shape)))
    assert torch.equal(ordering.revert(sequence), grid)
    features = torch.randn(3, *shape, 4)  # trailing feature dims travel along
    assert torch.equal(ordering.revert(ordering.sequence(features)), features)
    # position p holds the cell at coordinates()[p]
    coordinates = ordering.coordinates()
    assert torch.equal(sequence[0], grid[0][tuple(coordinates.T)])


@pytest.mark.parametrize("shape", [(4, 4), (5, 7), (6, 10), (1, 5), (3, 3), (9, 2), (10, 14, 10), (3, 5, 7), (2, 3, 4), (5, 5, 5), (1, 4, 3), (7, 6, 9)])
def test_hilbert_visits_every_cell_once_with_unit_steps(shape):
    walk = hilbert_walk(shape)
    flat = np.ravel_multi_index(tuple(walk.T), shape)
    assert sorted(flat.tolist()) == list(range(int(np.prod(shape))))
    assert (np.abs(np.diff(walk, axis=0)).sum(axis=1) == 1).all()
    ordering = HilbertCurve(spatial_shape=shape)
    steps = np.abs(np.diff(ordering.coordinates().numpy(), axis=0)).sum(axis=1)
    assert (steps == 1).all()


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 4)])
def test_hilbert_on_power_of_two_grids_fills_quadrants_one_at_a_time(shape):
    walk = hilbert_walk(shape)
    block = np.prod(shape) // 2 ** len(shape)
    for start in range(0, len(walk), block):
        corners = {tuple(c) for c in walk[start : start + block] // (np.array(shape) // 2)}
        assert len(corners) == 1


def test_duplicate_or_bad_transforms_are_recipe_errors():
    with pytest.raises(RecipeError, match="more than once"):
        RasterScan(transformation_order=["transpose", "rotate_90", "transpose"], spatial_shape=(2, 3, 4))
    with pytest.raises(RecipeError, match="not a permutation"):
        RasterScan(transpositions_axes=[[0, 0, 1]], spatial_shape=(2, 3, 4))
    with pytest.raises(RecipeError, match="rot90_axes"):
        SCurve(rot90_axes=[(0, 3)], spatial_shape=(2, 3, 4))
    with pytest.raises(RecipeError, match="reflected_spatial_dims"):
        HilbertCurve(reflected_spatial_dims=[True], spatial_shape=(2, 3, 4))


def test_transform_not_named_in_order_is_skipped():
    plain = RasterScan(spatial_shape=(3, 4))
    skipped = RasterScan(rot90_axes=[(0, 1)], transformation_order=["transpose"], spatial_shape=(3, 4))
    rotated = RasterScan(rot90_axes=[(0, 1)], spatial_shape=(3, 4))
    assert torch.equal(plain.sequence_order, skipped.sequence_order)
    assert not torch.equal(plain.sequence_order, rotated.sequence_order)


def test_random_order_is_seeded_and_saved_with_the_model():
    a, b = RandomOrder(seed=1, spatial_shape=(3, 4, 5)), RandomOrder(seed=1, spatial_shape=(3, 4, 5))
    c = RandomOrder(seed=2, spatial_shape=(3, 4, 5))
    assert torch.equal(a.sequence_order, b.sequence_order)
    assert not torch.equal(a.sequence_order, c.sequence_order)
    state = a.state_dict()
    c.load_state_dict(state)  # the saved permutation wins over the seed
    assert torch.equal(c.sequence_order, a.sequence_order)
    grid = torch.arange(60).reshape(1, 3, 4, 5)
    assert torch.equal(c.revert(c.sequence(grid)), grid)


def test_loading_a_different_deterministic_order_is_a_checkpoint_error():
    saved = RasterScan(rot90_axes=[(0, 1)], spatial_shape=(3, 4, 5)).state_dict()
    with pytest.raises(CheckpointError, match="differs"):
        RasterScan(spatial_shape=(3, 4, 5)).load_state_dict(saved)
    with pytest.raises(CheckpointError, match="grid"):
        RasterScan(spatial_shape=(3, 4, 6)).load_state_dict(saved)


def test_orderings_are_registered_with_the_grid_injected():
    reg = registry()
    for name, cls in CLASSES.items():
        component = reg.get("ordering", name)
        assert "spatial_shape" not in component.schema.parameters
        built = reg.build("ordering", {"name": name, "transformation_order": ["reflect"]}, spatial_shape=(2, 3, 4))
        assert isinstance(built, cls) and len(built) == 24
