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
DropoutMode = Literal["each", "all"]
"""Conditioning dropout (classifier-free guidance training): ``each`` drops every variable of
every subject independently with probability p, so the prior learns every subset of the
variables (partial conditioning) and, with probability p**n, none (the unconditional branch);
``all`` drops all variables of a subject at once with probability p (the unconditional branch
p of the time, but never a partial set)."""


class VariableEmbedding(nn.Module):
    """Maps ``{column: tensor [B]}`` to [B, n, dim], one vector per variable in recipe order.

    Continuous variables: ``mlp`` (Linear(1, dim) -> SiLU -> Linear(dim, dim), the default),
    ``linear`` (Linear(1, dim)), or ``tiled`` (the value copied into every channel, the original's
    parameter-free mode). Categorical variables: an embedding table with one row per level,
    Kaiming-normal initialised as in the original. `order` is the order of the returned vectors.

    With `dropout` > 0 there is one learned null vector per variable (`null`, [n, dim], recipe
    order). A variable absent from the values, or NaN in a row, takes its null vector: partial and
    unconditional conditioning, and the null branch of classifier-free guidance. In training mode
    each vector is also replaced by its null with probability `dropout` (`dropout_mode`), drawn
    from torch's global RNG so that a resumed run draws the same masks. Without dropout there is
    no `null` parameter, so older checkpoints and imported priors keep their state-dict keys.
    """

    def __init__(
        self,
        variables: Sequence[Variable],
        dim: int,
        continuous_embedding: ContinuousEmbedding,
        num_levels: Mapping[str, int] | None,
        owner: str,
        order: VectorOrder = "listed",
        dropout: float = 0.0,
        dropout_mode: DropoutMode = "each",
    ) -> None:
        super().__init__()
        if order not in ("listed", "last_first"):
            raise RecipeError(f"{owner}: order must be 'listed' or 'last_first', got {order!r}.")
        self.order = order
        if not 0.0 <= float(dropout) < 1.0:
            raise RecipeError(f"{owner}.dropout must be in [0, 1), got {dropout}.")
        if dropout_mode not in ("each", "all"):
            raise RecipeError(f"{owner}.dropout_mode must be 'each' or 'all', got {dropout_mode!r}.")
        self.dropout = float(dropout)
        self.dropout_mode = dropout_mode
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
        # created after the embedders, so a seed initialises them alike with or without dropout
        self.null = nn.Parameter(0.02 * torch.randn(len(self.variables), dim)) if self.dropout > 0 else None
        # follows .to(device/dtype) even when every variable is tiled (no parameters to ask)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    @property
    def has_nulls(self) -> bool:
        """True when trained with conditioning dropout: variables may be left out (null vectors)."""
        return self.null is not None

    def forward(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.null is None:
            return self._embed_all(values)
        return self._embed_with_nulls(values)

    def _embed_all(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Every variable given (a prior trained without conditioning dropout)."""
        device = self._device()
        vectors = []
        for variable, levels, embedder in zip(self.variables, self.levels, self.embedders):
            if variable.column not in values:
                raise DataError(
                    f"conditioning value for '{variable.column}' is missing; got {', '.join(values) or 'none'}. "
                    "This prior was trained without conditioning.dropout, so it needs every variable."
                )
            value = torch.as_tensor(values[variable.column], device=device).reshape(-1)
            vectors.append(self._embed_one(variable, levels, embedder, value))
        if self.order == "last_first":
            vectors.reverse()
        return torch.stack(vectors, dim=1)

    def _embed_with_nulls(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Absent variables and NaN rows take the null vectors; training also drops at random."""
        device = self._device()
        given = {
            v.column: torch.as_tensor(values[v.column], device=device).reshape(-1)
            for v in self.variables
            if v.column in values
        }
        if not given:
            raise DataError(
                "no conditioning value given; for unconditional rows pass NaN for every variable "
                "(brainsynth.core.prior.null_values)."
            )
        sizes = {column: value.shape[0] for column, value in given.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"conditioning values have different batch sizes: {sizes}.")
        batch = next(iter(sizes.values()))
        vectors, masks = [], []
        for variable, levels, embedder in zip(self.variables, self.levels, self.embedders):
            value = given.get(variable.column)
            if value is None:
                masks.append(torch.ones(batch, dtype=torch.bool, device=device))
                vectors.append(self.null.new_zeros(batch, self.dim))
                continue
            missing = torch.isnan(value) if torch.is_floating_point(value) else torch.zeros_like(value, dtype=torch.bool)
            if missing.any():
                value = value.masked_fill(missing, 0)
            masks.append(missing)
            vectors.append(self._embed_one(variable, levels, embedder, value))
        stacked = torch.stack(vectors, dim=1)  # [B, n, dim], recipe order
        null_mask = torch.stack(masks, dim=1)  # [B, n]
        if self.training and self.dropout > 0:
            shape = (batch, len(self.variables)) if self.dropout_mode == "each" else (batch, 1)
            drop = torch.rand(shape, device=device) < self.dropout
            null_mask = null_mask | drop.expand(batch, len(self.variables))
        stacked = torch.where(null_mask[..., None], self.null.to(stacked.dtype)[None], stacked)
        if self.order == "last_first":
            stacked = stacked.flip(1)
        return stacked

    def _embed_one(self, variable: Variable, levels: int | None, embedder: nn.Module, value: torch.Tensor) -> torch.Tensor:
        if levels is not None:
            return embedder(self._codes(variable.column, value, levels))
        value = value.to(torch.get_default_dtype() if not torch.is_floating_point(value) else value.dtype)
        if not torch.isfinite(value).all():
            hint = "" if self.null is not None else " (NaN means 'not given' only for a prior trained with conditioning.dropout)"
            raise DataError(f"conditioning value for '{variable.column}' is not finite: {value.tolist()}{hint}.")
        if self.continuous_embedding == "tiled":
            return value[:, None].to(self._dtype()).expand(-1, self.dim)
        return embedder(value[:, None].to(self._dtype()))

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
