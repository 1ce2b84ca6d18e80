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
    ``absolute`` (learned), ``fixed`` (sinusoidal) or ``none``. With `spatial_coordinates` and
    `spatial_mode`:

    * ``learned``: a learned embedding of each axis coordinate of the cell *predicted* at each
      grid position, summed with the position embedding (prepended positions get none);
    * ``absolute`` / ``fixed``: the original BrainSynth's tables, learned (one row per sequence
      position but the last, indexed by coordinate, so its checkpoints load as they are) or
      sinusoidal: the coordinate of the token *held* at each position (BOS gets zero), added to
      the token embeddings axis by axis before the conditioning is placed, as the original did.
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
        spatial_mode: str = "learned",
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
        self.spatial_mode = spatial_mode if spatial_coordinates is not None else "none"
        if spatial_mode not in ("learned", "absolute", "fixed"):
            raise RecipeError(f"{owner}: unknown spatial position embedding '{spatial_mode}'.")
        if spatial_coordinates is not None and spatial_mode == "learned":
            coords = spatial_coordinates.long()
            self.register_buffer("spatial_coordinates", coords, persistent=False)
            self.spatial = nn.ModuleList(
                nn.Embedding(int(coords[:, axis].max()) + 1, dim) for axis in range(coords.shape[1])
            )
            for table in self.spatial:
                nn.init.normal_(table.weight, std=1 / math.sqrt(dim))
        elif spatial_coordinates is not None:
            if sequence_length < 2:
                raise RecipeError(f"{owner}: spatial position embeddings need at least 2 grid cells.")
            held = spatial_coordinates.long()[:-1]  # the last cell is predicted, never held
            self.register_buffer("spatial_coordinates", held, persistent=False)
            if spatial_mode == "absolute":
                self.spatial = nn.ModuleList(nn.Embedding(sequence_length - 1, dim) for _ in range(held.shape[1]))
            else:
                tables = [
                    sinusoidal_table(int(held[:, axis].max()) + 1, dim)[held[:, axis]] for axis in range(held.shape[1])
                ]
                self.register_buffer("spatial_fixed", torch.stack(tables), persistent=False)

    def position_table(self) -> torch.Tensor | None:
        """[P + L, dim] additive position embedding of every position, or None."""
        table = None
        if self.positions == "absolute":
            table = self.absolute
        elif self.positions == "fixed":
            table = self.fixed
        if self.spatial_mode == "learned":
            grid = sum(emb(self.spatial_coordinates[:, axis]) for axis, emb in enumerate(self.spatial))
            spatial = torch.cat([grid.new_zeros(self.prefix_length, self.dim), grid], dim=0)
            table = spatial if table is None else table + spatial
        elif self.spatial_mode != "none":
            held = sum(self.held_spatial_tables())
            spatial = torch.cat([held.new_zeros(self.prefix_length, self.dim), held], dim=0)
            table = spatial if table is None else table + spatial
        return table

    def held_spatial_tables(self) -> list[torch.Tensor]:
        """Per axis, [L, dim]: the original's coordinate embedding of the token held at each grid
        position (row 0, BOS, is zero); empty unless `spatial_mode` is absolute or fixed."""
        if self.spatial_mode == "absolute":
            rows = [emb(self.spatial_coordinates[:, axis]) for axis, emb in enumerate(self.spatial)]
        elif self.spatial_mode == "fixed":
            rows = list(self.spatial_fixed.unbind(0))
        else:
            return []
        return [torch.cat([row.new_zeros(1, self.dim), row], dim=0) for row in rows]

    def plain_position_table(self) -> torch.Tensor | None:
        """[P + L, dim] the absolute / fixed position embedding alone, or None."""
        if self.positions == "absolute":
            return self.absolute
        if self.positions == "fixed":
            return self.fixed
        return None

    def prefix(self, conditioning: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """[B, P + 1, dim] embeddings (without positions) of the prepended vectors and BOS."""
        bos = self.token_embedding.weight[-1].expand(batch_size, 1, self.dim)
        if self.placement == "bos":
            return conditioning.to(bos)
        if self.placement == "prepend":
            return torch.cat([conditioning.to(bos), bos], dim=1)
        return bos

    def forward(self, tokens: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
        if tokens.shape[1] > self.sequence_length:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens is longer than {self.sequence_length}")
        x = self.token_embedding(tokens)
        held = self.held_spatial_tables()
        for axis_table in held:  # the original's order: token + axis 0 + axis 1 + ..., then placement
            x = x + axis_table[: x.shape[1]].to(x.dtype)
        if self.placement == "bos":
            x = torch.cat([conditioning.to(x), x[:, 1:]], dim=1)
        elif self.placement == "prepend":
            x = torch.cat([conditioning.to(x), x], dim=1)
        table = self.plain_position_table() if held else self.position_table()
        if table is not None:
            x = x + table[: x.shape[1]]
        return x
