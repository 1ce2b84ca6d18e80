"""The original's 3D spatial relative position bias: one learned scalar per head per grid offset.

For sequence positions p and q the offset is taken between the grid cells *predicted* at p and q
(the original's convention: consistent for all pairs, shifted by one from the cells held). Each
offset component is kept exact, or, with `max_distance`, compressed beyond max_distance/2 by the
iRPE piecewise-log function. Prepended conditioning positions share one extra id. The bias is
shared by every self-attention layer and added to the pre-softmax scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def bucket_offsets(offsets: torch.Tensor, max_distance: int) -> torch.Tensor:
    """iRPE piecewise function: |x| <= a kept, larger log-compressed up to max_distance (a = max/2)."""
    alpha = max(max_distance // 2, 1)
    beta, gamma = max_distance, 4 * max_distance
    magnitude = offsets.abs()
    far = magnitude > alpha
    compressed = alpha + torch.log(magnitude.clamp(min=1).double() / alpha) / math.log(gamma / alpha) * (beta - alpha)
    compressed = compressed.round().clamp(max=beta).long()
    return torch.where(far, torch.sign(offsets) * compressed, offsets)


def relative_position_ids(coordinates: torch.Tensor, prefix: int, max_distance: int | None) -> tuple[torch.Tensor, int]:
    """[T, T] ids of the offsets between the cells of all position pairs, and the number of ids.

    `coordinates` [L, ndim] are the cells predicted at the L grid positions; T = prefix + L and
    the first `prefix` rows/columns (prepended conditioning) get the last id.
    """
    length, ndim = coordinates.shape
    ids = torch.zeros(length, length, dtype=torch.long)
    stride = 1
    for axis in range(ndim):
        axis_coordinates = coordinates[:, axis].long()
        offsets = axis_coordinates[:, None] - axis_coordinates[None, :]
        if max_distance is not None:
            offsets = bucket_offsets(offsets, max_distance)
        reach = int(offsets.abs().max()) if offsets.numel() else 0
        ids += (offsets + reach) * stride
        stride *= 2 * reach + 1
    num_offsets = stride
    if prefix:
        padded = torch.full((prefix + length, prefix + length), num_offsets, dtype=torch.long)
        padded[prefix:, prefix:] = ids
        ids = padded
    return ids, num_offsets + (1 if prefix else 0)


class SpatialRelativeBias(nn.Module):
    """Learned [heads] bias per grid offset, as an additive attention bias [heads, n, n]."""

    def __init__(self, coordinates: torch.Tensor, heads: int, prefix: int = 0, max_distance: int | None = None) -> None:
        super().__init__()
        ids, num_ids = relative_position_ids(coordinates, prefix, max_distance)
        self.register_buffer("ids", ids, persistent=False)
        self.table = nn.Embedding(num_ids, heads)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, n: int) -> torch.Tensor:
        """Bias [heads, n, n] for the first n positions."""
        return self.table(self.ids[:n, :n]).permute(2, 0, 1)
