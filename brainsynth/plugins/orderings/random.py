"""Random order: a seeded shuffle of the raster scan, saved with the model."""

from __future__ import annotations

import numpy as np

from brainsynth.core.ordering import DEFAULT_TRANSFORMATION_ORDER, Ordering, Transformation, raster_walk


class RandomOrder(Ordering):
    """Seeded random permutation (the same as MONAI's 'random' after ``np.random.seed(seed)``).

    The permutation is saved with the model (`state_dict`), so a checkpoint is sampled in the
    order it was trained in even if the seed or numpy's shuffle changes.

    The original BrainSynth shuffled the same raster list with numpy's global generator, seeded
    only under ``--deterministic=True`` (``set_determinism(seed + rank)``) and not drawn from
    before the ordering was built; ``seed: <its --seed>`` therefore gives its rank-0 order, the
    one its inference rebuilt. Without ``--deterministic`` its order was never reproducible.
    """

    persistent_order_only = False

    def __init__(
        self,
        seed: int = 0,
        transpositions_axes: list[list[int]] | None = None,
        rot90_axes: list[tuple[int, int]] | None = None,
        reflected_spatial_dims: list[bool] | None = None,
        transformation_order: list[Transformation] = list(DEFAULT_TRANSFORMATION_ORDER),
        *,
        spatial_shape: tuple[int, ...],
    ) -> None:
        self.seed = seed
        super().__init__(spatial_shape, transpositions_axes, rot90_axes, reflected_spatial_dims, transformation_order)

    def walk(self, shape: tuple[int, ...]) -> np.ndarray:
        cells = raster_walk(shape)
        np.random.RandomState(self.seed).shuffle(cells)
        return cells
