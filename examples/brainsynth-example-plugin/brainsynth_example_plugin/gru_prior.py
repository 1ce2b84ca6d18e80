"""A small recurrent prior: the smallest network that satisfies the prior contract, conditioning
and a cached decoder included.

A prior subclasses `brainsynth.core.prior.Prior`: it sets `num_tokens` (the codebook size + 1:
the last id is BOS), `sequence_length` and `conditioning`, and maps tokens ``[B, n]`` starting
with BOS to logits ``[B, n, num_tokens]``. The engine passes `num_tokens`, `max_seq_len`,
`ordering` and `conditioning` (built from the recipe's ``conditioning`` block, or None). The
subject variables arrive as vectors from ``self.condition(values)``; this prior starts its GRU
from them. `decoder` is optional: without it, sampling re-reads the whole prefix for every token (and
says so once); a GRU keeps its state, so its decoder costs one step per token, and the class
declares ``has_cached_decoder = True``.
"""

from __future__ import annotations

import torch
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, ConditioningValues, Prior
from torch import nn


class GRUPrior(Prior):
    """GRU over token embeddings, predicting the next token; conditioned through its initial state."""

    has_cached_decoder = True  # `GRUDecoder`: one GRU step per token

    def __init__(
        self,
        dim: int = 64,
        layers: int = 1,
        dropout: float = 0.0,
        *,
        num_tokens: int,
        max_seq_len: int,
        ordering: Ordering | None = None,
        conditioning: Conditioning | None = None,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.sequence_length = max_seq_len
        self.conditioning = conditioning
        self.layers, self.dim = layers, dim
        self.embedding = nn.Embedding(num_tokens, dim)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(dim, num_tokens)
        conditioned = conditioning is not None and conditioning.placement != "none"
        self.initial_state = nn.Linear(conditioning.dim, layers * dim) if conditioned else None

    def state(self, conditioning: ConditioningValues | None, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """The GRU's initial hidden state [layers, B, dim] from the condition vectors (None: zeros)."""
        if self.initial_state is None:
            return None
        vectors = self.condition(conditioning)  # [B, n, conditioning.dim]
        return torch.tanh(self.initial_state(vectors.mean(1))).view(batch_size, self.layers, self.dim).transpose(0, 1).contiguous()

    def forward(self, tokens: torch.Tensor, conditioning: ConditioningValues | None = None) -> torch.Tensor:
        """[B, n] token ids (BOS first) -> [B, n, num_tokens] logits."""
        hidden, _ = self.gru(self.embedding(tokens), self.state(conditioning, tokens.shape[0], tokens.device))
        return self.head(hidden)

    def decoder(self, batch_size: int, conditioning: ConditioningValues | None = None) -> GRUDecoder:
        return GRUDecoder(self, batch_size, conditioning)


class GRUDecoder:
    """One GRU step per token: the hidden state is the whole cache."""

    def __init__(self, prior: GRUPrior, batch_size: int, conditioning: ConditioningValues | None) -> None:
        self.prior = prior
        device = prior.head.weight.device
        self.hidden = prior.state(conditioning, batch_size, device)
        self.bos = torch.full((batch_size,), prior.bos_token, dtype=torch.long, device=device)

    def start(self) -> torch.Tensor:
        return self.step(self.bos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        output, self.hidden = self.prior.gru(self.prior.embedding(tokens)[:, None], self.hidden)
        return self.prior.head(output[:, 0])
