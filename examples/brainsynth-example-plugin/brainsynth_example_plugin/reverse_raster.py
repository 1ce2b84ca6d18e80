"""An ordering that reads the token grid in reverse raster order."""

import torch


class ReverseRaster:
    """Raster scan, last voxel first."""

    def __init__(self, spatial_shape: tuple[int, ...]) -> None:
        self.spatial_shape = tuple(spatial_shape)
        count = 1
        for size in self.spatial_shape:
            count *= size
        self.index = torch.arange(count - 1, -1, -1)
        self.inverse = torch.argsort(self.index)

    def sequence(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, *grid] -> [B, L]."""
        return grid.flatten(1)[:, self.index.to(grid.device)]

    def revert(self, sequence: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, *grid]."""
        return sequence[:, self.inverse.to(sequence.device)].reshape(-1, *self.spatial_shape)
