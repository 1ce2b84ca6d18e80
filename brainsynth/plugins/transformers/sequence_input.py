"""The input side of a prior: token embeddings, conditioning placement and position embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from brainsynth.core.errors import RecipeError
from brainsynth.core.prior import Conditioning


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """[length, dim] fixed sin/cos embedding (first half sin, second half cos)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    angles = torch.arange(length).float()[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :dim]


class SequenceInput(nn.Module):
    """Builds the [B, P + n, dim] input of a prior from tokens [B, n] (starting with BOS).

    P = number of prepended conditioning vectors. With ``bos`` placement the conditioning
    vector replaces the BOS embedding. Position embeddings (added, one row per position):
    ``absolute`` (learned), ``fixed`` (sinusoidal) or ``none``; with `spatial_coordinates`, a learned
    embedding of each axis coordinate of the cell predicted at each grid position is added
    (prepended positions get none).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        sequence_length: int,
        conditioning: Conditioning | None,
        positions: str = "none",
        spatial_coordinates: torch.Tensor | None = None,
        owner: str = "network",
    ) -> None:
        super().__init__()
        self.placement = conditioning.placement if conditioning is not None else "none"
        if self.placement in ("bos", "prepend") and conditioning.dim != dim:
            raise RecipeError(
                f"{owner}: {self.placement} conditioning makes {conditioning.dim}-wide vectors but the model "
                f"width is {dim}; they must match."
            )
        self.prefix_length = conditioning.num_vectors if self.placement == "prepend" else 0
        self.sequence_length = sequence_length
        self.total_length = self.prefix_length + sequence_length
        self.dim = dim
        self.token_embedding = nn.Embedding(num_tokens, dim)
        nn.init.kaiming_normal_(self.token_embedding.weight)
        self.positions = positions
        if positions == "absolute":
            self.absolute = nn.Parameter(torch.randn(self.total_length, dim) * 0.02)
        elif positions == "fixed":
            self.register_buffer("fixed", sinusoidal_table(self.total_length, dim), persistent=False)
        elif positions != "none":
            raise RecipeError(f"{owner}: unknown position embedding '{positions}'.")
        self.spatial = None
        if spatial_coordinates is not None:
            coords = spatial_coordinates.long()
            self.register_buffer("spatial_coordinates", coords, persistent=False)
            self.spatial = nn.ModuleList(
                nn.Embedding(int(coords[:, axis].max()) + 1, dim) for axis in range(coords.shape[1])
            )
            for table in self.spatial:
                nn.init.normal_(table.weight, std=1 / math.sqrt(dim))

    def position_table(self) -> torch.Tensor | None:
        """[P + L, dim] additive position embedding of every position, or None."""
        table = None
        if self.positions == "absolute":
            table = self.absolute
        elif self.positions == "fixed":
            table = self.fixed
        if self.spatial is not None:
            grid = sum(emb(self.spatial_coordinates[:, axis]) for axis, emb in enumerate(self.spatial))
            spatial = torch.cat([grid.new_zeros(self.prefix_length, self.dim), grid], dim=0)
            table = spatial if table is None else table + spatial
        return table

    def prefix(self, conditioning: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """[B, P + 1, dim] embeddings (without positions) of the prepended vectors and BOS."""
        bos = self.token_embedding.weight[-1].expand(batch_size, 1, self.dim)
        if self.placement == "bos":
            return conditioning.to(bos.dtype)
        if self.placement == "prepend":
            return torch.cat([conditioning.to(bos.dtype), bos], dim=1)
        return bos

    def forward(self, tokens: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
        if tokens.shape[1] > self.sequence_length:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens is longer than {self.sequence_length}")
        x = self.token_embedding(tokens)
        if self.placement == "bos":
            x = torch.cat([conditioning.to(x.dtype), x[:, 1:]], dim=1)
        elif self.placement == "prepend":
            x = torch.cat([conditioning.to(x.dtype), x], dim=1)
        table = self.position_table()
        if table is not None:
            x = x + table[: x.shape[1]]
        return x
