"""A small recurrent prior: the smallest network that satisfies the `transformer` kind."""

import torch
from torch import nn


class GRUPrior(nn.Module):
    """GRU over token embeddings, predicting the next token."""

    def __init__(self, num_tokens: int, max_seq_len: int, dim: int = 64, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, dim)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(dim, num_tokens)
        self.max_seq_len = max_seq_len

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        """[B, L] token ids -> [B, L, num_tokens] logits."""
        hidden, _ = self.gru(self.embedding(tokens))
        return self.head(hidden)
