"""Cross-attention conditioning (the published one): the variable vectors are a context."""

from __future__ import annotations

from typing import Annotated

import torch

from brainsynth.core.data import Variable
from brainsynth.core.errors import RecipeError
from brainsynth.core.prior import Conditioning, ConditioningValues
from brainsynth.core.schema import Range

from .embedding import ContinuousEmbedding, DropoutMode, VariableEmbedding, VectorOrder


class CrossAttend(Conditioning):
    """One context token per variable, attended to by a cross-attention layer in every block.

    `dim` is the context width (default: the model width); the prior's cross-attention projects
    it, so it may differ from the model width. `dropout` > 0 (with `dropout_mode` ``each`` or
    ``all``) trains learned null vectors for classifier-free guidance and partial conditioning.
    """

    placement = "context"

    def __init__(
        self,
        variables: list[Variable],
        continuous_embedding: ContinuousEmbedding = "mlp",
        dim: int | None = None,
        table: str | None = None,
        order: VectorOrder = "listed",
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        dropout_mode: DropoutMode = "each",
        *,
        model_dim: int,
        num_levels: dict[str, int] | None = None,
    ) -> None:
        width = model_dim if dim is None else dim
        super().__init__(variables, width)
        if not self.variables:
            raise RecipeError("conditioning.variables: cross_attend needs at least one variable.")
        self.table = table
        self.embed = VariableEmbedding(
            self.variables, width, continuous_embedding, num_levels, "conditioning", order, dropout, dropout_mode
        )

    @property
    def num_vectors(self) -> int:
        return len(self.variables)

    def forward(self, values: ConditioningValues | None) -> torch.Tensor | None:
        return self.embed(values or {})
