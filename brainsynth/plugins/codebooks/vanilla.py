"""The codebook of the first VQ-VAE paper: codes trained by the optimiser.

Loss = ``MSE(q, sg[z])`` (moves the codes) + ``beta * MSE(sg[q], z)`` (commits the encoder).
An EMA of the per-code assignment counts is kept for dead-code detection and logging only; it
does not move the codes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import RecipeError
from brainsynth.core.tokenizer import Codebook, Quantized
from brainsynth.core.schema import NonNegativeFloat, PositiveInt, Range

from .ema import check_positive, init_codes
from .search import (
    all_reduce_sum_,
    check_restarts_in_sync,
    code_counts,
    flatten_channels_last,
    nearest_codes,
    perplexity_and_usage,
    restart_candidates,
    unflatten_channels_first,
)


class VanillaCodebook(Codebook):
    """Codebook trained by gradient: codebook loss + commitment, optional dead-code restart.

    Args:
        embedding_dim: code size D (supplied by the tokenizer).
        num_embeddings: number of codes K.
        commitment_cost: weight beta of ``MSE(sg[q], z)``.
        init: initial codes, ``normal`` or ``kaiming_uniform``.
        usage_decay: decay of the EMA of assignment counts used to find dead codes.
        ddp_sync: sum the assignment counts over ranks under torch.distributed.
        dead_code_restart: every `restart_every` training steps, codes whose EMA count fell
            below `dead_code_threshold` are moved onto random encoder vectors of the batch (the
            global batch under DDP, drawn as one process would: `search.restart_candidates`).
        max_distance_elements: largest distance matrix computed at once (rows x K).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_embeddings: PositiveInt = 2048,
        commitment_cost: NonNegativeFloat = 0.25,
        init: Literal["normal", "kaiming_uniform"] = "normal",
        usage_decay: Annotated[float, Range(ge=0, lt=1)] = 0.99,
        ddp_sync: bool = True,
        dead_code_restart: bool = False,
        dead_code_threshold: NonNegativeFloat = 1.0,
        restart_every: PositiveInt = 100,
        max_distance_elements: PositiveInt = 1 << 24,
    ) -> None:
        super().__init__()
        check_positive("vanilla", num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                       restart_every=restart_every, max_distance_elements=max_distance_elements)
        if not 0.0 <= usage_decay < 1.0:
            raise RecipeError(f"codebook 'vanilla': usage_decay must be in [0, 1), got {usage_decay}.")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.usage_decay = usage_decay
        self.ddp_sync = ddp_sync
        self.dead_code_restart = dead_code_restart
        self.dead_code_threshold = dead_code_threshold
        self.restart_every = restart_every
        self.max_distance_elements = max_distance_elements

        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        init_codes(self.embedding.weight, init)
        self.register_buffer("cluster_size", torch.zeros(num_embeddings))
        if dead_code_restart:
            self.register_buffer("restart_step", torch.zeros((), dtype=torch.long))

    @property
    def codes(self) -> torch.Tensor:
        return self.embedding.weight

    def quantize(self, z: torch.Tensor) -> Quantized:
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = flatten_channels_last(z)
            indices = nearest_codes(flat, self.codes.detach(), self.max_distance_elements)
            quantized = unflatten_channels_first(F.embedding(indices, self.codes), z)
            counts = code_counts(indices, self.num_embeddings)
            codebook_loss = F.mse_loss(quantized, z.detach())
            commitment = F.mse_loss(quantized.detach(), z)
            loss = codebook_loss + self.commitment_cost * commitment
            straight_through = z + (quantized - z).detach()
            if self.training:
                self._update(flat, counts, z.shape[0])
        perplexity, usage = perplexity_and_usage(counts)
        grid = (z.shape[0], *z.shape[2:])
        return Quantized(straight_through, loss, indices.view(grid), perplexity, usage)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, counts: torch.Tensor, items: int) -> None:
        counts = counts.clone()
        if self.ddp_sync:
            all_reduce_sum_(counts)
        self.cluster_size.mul_(self.usage_decay).add_(counts, alpha=1.0 - self.usage_decay)
        if not self.dead_code_restart:
            return
        check_restarts_in_sync("vanilla", self.ddp_sync)
        self.restart_step += 1
        if int(self.restart_step) % self.restart_every:
            return
        dead = self.cluster_size < self.dead_code_threshold
        count = int(dead.sum())
        if count:
            self.embedding.weight[dead] = restart_candidates(flat, count, items)
            self.cluster_size[dead] = self.dead_code_threshold

    def summaries(self) -> dict[str, float]:
        return {"commitment_cost": float(self.commitment_cost)}
