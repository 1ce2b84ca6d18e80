"""An ordering that reads the token grid in reverse raster order (last cell first).

An ordering subclasses `brainsynth.core.ordering.Ordering` and only says how to walk a grid
(`walk`); the base class builds the permutation, applies the optional transforms, saves it with
the prior and checks it on loading. The engine passes `spatial_shape` (the token grid).
"""

from __future__ import annotations

import numpy as np
from brainsynth.core.ordering import Ordering, raster_walk


class ReverseRaster(Ordering):
    """Raster scan, last cell first."""

    def __init__(self, *, spatial_shape: tuple[int, ...]) -> None:
        super().__init__(spatial_shape)

    def walk(self, shape: tuple[int, ...]) -> np.ndarray:
        return raster_walk(shape)[::-1]
