"""One vector per subject variable: the shared part of every conditioning component."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from brainsynth.core.data import Variable
from brainsynth.core.errors import DataError, RecipeError

ContinuousEmbedding = Literal["mlp", "linear", "tiled"]
VectorOrder = Literal["listed", "last_first"]
"""``listed``: one vector per variable in recipe order. ``last_first``: the original BrainSynth's
order (it prepends each new vector, so the last variable comes first); imported priors need it."""


class VariableEmbedding(nn.Module):
    """Maps ``{column: tensor [B]}`` to [B, n, dim], one vector per variable in recipe order.

    Continuous variables: ``mlp`` (Linear(1, dim) -> SiLU -> Linear(dim, dim), the default),
    ``linear`` (Linear(1, dim)), or ``tiled`` (the value copied into every channel, the original's
    parameter-free mode). Categorical variables: an embedding table with one row per level,
    Kaiming-normal initialised as in the original. `order` is the order of the returned vectors.
    """

    def __init__(
        self,
        variables: Sequence[Variable],
        dim: int,
        continuous_embedding: ContinuousEmbedding,
        num_levels: Mapping[str, int] | None,
        owner: str,
        order: VectorOrder = "listed",
    ) -> None:
        super().__init__()
        if order not in ("listed", "last_first"):
            raise RecipeError(f"{owner}: order must be 'listed' or 'last_first', got {order!r}.")
        self.order = order
        if dim < 1:
            raise RecipeError(f"{owner}: the conditioning width must be positive, got {dim}.")
        self.variables = list(variables)
        self.dim = dim
        self.continuous_embedding = continuous_embedding
        self.levels: list[int | None] = []
        embedders = []
        for variable in self.variables:
            if variable.kind == "categorical":
                levels = (num_levels or {}).get(variable.column)
                if levels is None or levels < 1:
                    raise RecipeError(
                        f"{owner}: categorical variable '{variable.column}' needs its number of levels "
                        f"(read from the conditioning table); got {levels}."
                    )
                table = nn.Embedding(levels, dim)
                nn.init.kaiming_normal_(table.weight)
                embedders.append(table)
                self.levels.append(levels)
            elif continuous_embedding == "tiled":
                embedders.append(nn.Identity())
                self.levels.append(None)
            elif continuous_embedding == "linear":
                embedders.append(nn.Linear(1, dim))
                self.levels.append(None)
            else:
                embedders.append(nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim)))
                self.levels.append(None)
        self.embedders = nn.ModuleList(embedders)
        # follows .to(device/dtype) even when every variable is tiled (no parameters to ask)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def forward(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = self._device()
        vectors = []
        for variable, levels, embedder in zip(self.variables, self.levels, self.embedders):
            if variable.column not in values:
                raise DataError(
                    f"conditioning value for '{variable.column}' is missing; got {', '.join(values) or 'none'}."
                )
            value = torch.as_tensor(values[variable.column], device=device).reshape(-1)
            if levels is not None:
                vectors.append(embedder(self._codes(variable.column, value, levels)))
            else:
                value = value.to(torch.get_default_dtype() if not torch.is_floating_point(value) else value.dtype)
                if not torch.isfinite(value).all():
                    raise DataError(f"conditioning value for '{variable.column}' is not finite: {value.tolist()}.")
                if self.continuous_embedding == "tiled":
                    vectors.append(value[:, None].to(self._dtype()).expand(-1, self.dim))
                else:
                    vectors.append(embedder(value[:, None].to(self._dtype())))
        if self.order == "last_first":
            vectors.reverse()
        return torch.stack(vectors, dim=1)

    @staticmethod
    def _codes(column: str, value: torch.Tensor, levels: int) -> torch.Tensor:
        if torch.is_floating_point(value):
            if not torch.equal(value, value.round()):
                raise DataError(f"categorical '{column}' must hold integer level codes, got {value.tolist()}.")
            value = value.long()
        value = value.long()
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= levels):
            raise DataError(
                f"categorical '{column}' has level codes {value.tolist()} outside 0..{levels - 1}: "
                f"re-read the table the model was trained with."
            )
        return value

    def _device(self) -> torch.device:
        return self.anchor.device

    def _dtype(self) -> torch.dtype:
        return self.anchor.dtype
