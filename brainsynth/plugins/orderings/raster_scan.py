"""Raster scan: row-major reading of the (transformed) grid, last axis fastest."""

from __future__ import annotations

import numpy as np

from brainsynth.core.ordering import DEFAULT_TRANSFORMATION_ORDER, Ordering, Transformation, raster_walk


class RasterScan(Ordering):
    """Row-major scan (last axis fastest) after the configured transforms; MONAI's 'raster_scan'."""

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
        return raster_walk(shape)
