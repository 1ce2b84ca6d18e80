"""Conditioning in place of BOS: the sum of the variable vectors replaces the BOS embedding."""

from __future__ import annotations

from typing import Annotated

import torch

from brainsynth.core.data import Variable
from brainsynth.core.errors import RecipeError
from brainsynth.core.prior import Conditioning, ConditioningValues
from brainsynth.core.schema import Range

from .embedding import ContinuousEmbedding, DropoutMode, VariableEmbedding, VectorOrder


class BosReplacement(Conditioning):
    """The embedding at position 0 (BOS) is replaced by the sum of the conditioning vectors.

    `dropout` > 0 (with `dropout_mode` ``each`` or ``all``) trains learned null vectors for
    classifier-free guidance and partial conditioning (see `VariableEmbedding`).
    """

    placement = "bos"

    def __init__(
        self,
        variables: list[Variable],
        continuous_embedding: ContinuousEmbedding = "mlp",
        table: str | None = None,
        order: VectorOrder = "listed",
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        dropout_mode: DropoutMode = "each",
        *,
        model_dim: int,
        num_levels: dict[str, int] | None = None,
    ) -> None:
        super().__init__(variables, model_dim)
        if not self.variables:
            raise RecipeError("conditioning.variables: bos_replacement needs at least one variable.")
        self.table = table
        self.embed = VariableEmbedding(
            self.variables, model_dim, continuous_embedding, num_levels, "conditioning", order, dropout, dropout_mode
        )

    @property
    def num_vectors(self) -> int:
        return 1

    def forward(self, values: ConditioningValues | None) -> torch.Tensor | None:
        vectors = self.embed(values or {})
        if self.embed.order == "last_first":  # a sum has no order to honour: add in listed order, as the original did
            vectors = vectors.flip(1)
        return vectors.sum(dim=1, keepdim=True)
