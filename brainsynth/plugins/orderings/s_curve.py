"""S-curve: a snake through the (transformed) grid, as MONAI's 's_curve' walks it."""

from __future__ import annotations

import numpy as np

from brainsynth.core.ordering import DEFAULT_TRANSFORMATION_ORDER, Ordering, Transformation


def s_curve_walk(shape: tuple[int, ...]) -> np.ndarray:
    """Rows in order; columns alternate with row parity; in 3D depths alternate with the parity of
    the column index itself (MONAI's rule, so consecutive rows are not always joined by a unit step)."""
    rows, cols = shape[0], shape[1]
    depths = shape[2] if len(shape) == 3 else None
    cells = []
    for r in range(rows):
        for c in (range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)):
            if depths is None:
                cells.append((r, c))
                continue
            for z in (range(depths) if c % 2 == 0 else range(depths - 1, -1, -1)):
                cells.append((r, c, z))
    return np.asarray(cells, dtype=np.int64)


class SCurve(Ordering):
    """Snake scan after the configured transforms; MONAI's 's_curve'."""

    def __init__(
        self,
        transpositions_axes: list[list[int]] | None = None,
        rot90_axes: list[tuple[int, int]] | None = None,
        reflected_spatial_dims: list[bool] | None = None,
        transformation_order: list[Transformation] = list(DEFAULT_TRANSFORMATION_ORDER),
        *,
        spatial_shape: tuple[int, ...],
    ) -> None:
        super().__init__(spatial_shape, transpositions_axes, rot90_axes, reflected_spatial_dims, transformation_order)

    def walk(self, shape: tuple[int, ...]) -> np.ndarray:
        return s_curve_walk(shape)
