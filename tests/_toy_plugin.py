"""A plugin defined inside the test suite: registered through the real hook, used by recipes."""

from __future__ import annotations

import torch
from torch import nn

from brainsynth.core.hookspecs import hookimpl
from brainsynth.core.ordering import Ordering, raster_walk
from brainsynth.core.prior import Prior


class FlatOrdering(Ordering):
    """Row-major order (the simplest ordering)."""

    def __init__(self, spatial_shape: tuple[int, ...]) -> None:
        super().__init__(spatial_shape)

    def walk(self, shape: tuple[int, ...]):
        return raster_walk(shape)


class BigramPrior(Prior):
    """Predicts the next token from the current one (conditioning, when given, is not used)."""

    def __init__(self, num_tokens: int, max_seq_len: int, dim: int = 16, conditioning=None) -> None:
        super().__init__()
        self.num_tokens, self.sequence_length, self.conditioning = num_tokens, max_seq_len, conditioning
        self.embedding = nn.Embedding(num_tokens, dim)
        self.head = nn.Linear(dim, num_tokens)

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        return self.head(self.embedding(tokens))


class ToyPlugin:
    @staticmethod
    @hookimpl
    def register_components(registry):
        registry.register("ordering", "flat", FlatOrdering)
        registry.register("prior", "bigram", BigramPrior)


def recipe_text(tokens_dir, root, name="toy", epochs=2, extra="") -> str:
    return (
        f"task: transformer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        f"seed: 3\n"
        f"data: {{name: tokens, train: {tokens_dir}, val: {tokens_dir}}}\n"
        f"ordering: {{name: flat}}\n"
        f"network: {{name: bigram, dim: 8}}\n"
        f"optimizer: {{lr: 0.05}}\n"
        f"train: {{epochs: {epochs}, batch_size: 2, log_every: 1}}\n" + extra
    )
