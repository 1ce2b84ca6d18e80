"""The EMA codebook of the original (van den Oord et al. 2017; Sonnet v2 `VectorQuantizerEMA`).

Codes are not trained by the optimiser: every training step moves each code towards the mean of
the encoder vectors assigned to it, through exponential moving averages of the assignment counts
(``cluster_size``) and sums (``embed_avg``), with Laplace smoothing of the counts. Under
torch.distributed the per-step counts and sums are summed over ranks first, so every rank keeps
the same codebook. The loss is the commitment term only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import RecipeError
from brainsynth.core.tokenizer import Codebook, Quantized
from brainsynth.core.schema import NonNegativeFloat, PositiveFloat, PositiveInt, Range

from .search import (
    all_reduce_sum_,
    check_restarts_in_sync,
    code_counts,
    flatten_channels_last,
    nearest_codes,
    perplexity_and_usage,
    restart_candidates,
    rule_of_thumb_decay_epochs,
    scheduled_decay,
    unflatten_channels_first,
)


def init_codes(weight: torch.Tensor, init: str) -> None:
    """``normal``: N(0, 1) (the original); ``kaiming_uniform``: fan-in, linear gain."""
    with torch.no_grad():
        if init == "normal":
            nn.init.normal_(weight)
        elif init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="linear")
        else:
            raise RecipeError(f"codebook init: expected 'normal' or 'kaiming_uniform', got {init!r}.")


def check_positive(owner: str, **values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise RecipeError(f"codebook '{owner}': {key} must be > 0, got {value}.")


class EMACodebook(Codebook):
    """EMA codebook: decay, Laplace smoothing, commitment cost, decay warm-up, DDP sync.

    Args:
        embedding_dim: code size D (supplied by the tokenizer).
        num_embeddings: number of codes K (the paper: 2048).
        decay: EMA decay of counts and sums (the paper: 0.5); the warm-up starts here.
        epsilon: Laplace smoothing of the counts.
        commitment_cost: weight beta of ``MSE(sg[q], z)``.
        init: initial codes, ``normal`` (the original) or ``kaiming_uniform``.
        decay_warmup: ``none`` (the paper), ``linear`` or ``step`` (four steps) from `decay` to
            `decay_target` over `max_decay_epochs`.
        decay_target: the decay the warm-up ends at.
        max_decay_epochs: warm-up length in epochs; unset means the original's rule of thumb
            (about 2.8 M samples).
        ddp_sync: sum the statistics over ranks under torch.distributed.
        dead_code_restart: every `restart_every` training steps, codes whose EMA count fell
            below `dead_code_threshold` are moved onto random encoder vectors of the batch (the
            global batch under DDP, drawn as one process would: `search.restart_candidates`).
        max_distance_elements: largest distance matrix computed at once (rows x K).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_embeddings: PositiveInt = 2048,
        decay: Annotated[float, Range(ge=0, lt=1)] = 0.99,
        epsilon: PositiveFloat = 1.0e-5,
        commitment_cost: NonNegativeFloat = 0.25,
        init: Literal["normal", "kaiming_uniform"] = "normal",
        decay_warmup: Literal["none", "linear", "step"] = "none",
        decay_target: Annotated[float, Range(ge=0, lt=1)] = 0.99,
        max_decay_epochs: PositiveInt | None = None,
        ddp_sync: bool = True,
        dead_code_restart: bool = False,
        dead_code_threshold: NonNegativeFloat = 1.0,
        restart_every: PositiveInt = 100,
        max_distance_elements: PositiveInt = 1 << 24,
    ) -> None:
        super().__init__()
        check_positive("ema", num_embeddings=num_embeddings, embedding_dim=embedding_dim, epsilon=epsilon,
                       restart_every=restart_every, max_distance_elements=max_distance_elements)
        for key, value in (("decay", decay), ("decay_target", decay_target)):
            if not 0.0 <= value < 1.0:
                raise RecipeError(f"codebook 'ema': {key} must be in [0, 1), got {value}.")
        if max_decay_epochs is not None and max_decay_epochs < 1:
            raise RecipeError(f"codebook 'ema': max_decay_epochs must be >= 1, got {max_decay_epochs}.")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.decay = decay
        self.initial_decay = decay
        self.decay_target = decay_target
        self.decay_warmup = decay_warmup
        self.max_decay_epochs = max_decay_epochs
        self.epsilon = epsilon
        self.commitment_cost = commitment_cost
        self.ddp_sync = ddp_sync
        self.dead_code_restart = dead_code_restart
        self.dead_code_threshold = dead_code_threshold
        self.restart_every = restart_every
        self.max_distance_elements = max_distance_elements

        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        init_codes(self.embedding.weight, init)
        self.embedding.weight.requires_grad_(False)
        self.register_buffer("cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("embed_avg", self.embedding.weight.detach().clone())
        if dead_code_restart:
            self.register_buffer("restart_step", torch.zeros((), dtype=torch.long))

    @property
    def codes(self) -> torch.Tensor:
        return self.embedding.weight

    def quantize(self, z: torch.Tensor) -> Quantized:
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = flatten_channels_last(z)
            indices = nearest_codes(flat, self.codes, self.max_distance_elements)
            quantized = unflatten_channels_first(F.embedding(indices, self.codes), z)
            counts = code_counts(indices, self.num_embeddings)
            if self.training:
                self._update(flat, indices, counts, z.shape[0])
            loss = self.commitment_cost * F.mse_loss(quantized.detach(), z)
            quantized = z + (quantized - z).detach()
        perplexity, usage = perplexity_and_usage(counts)
        grid = (z.shape[0], *z.shape[2:])
        return Quantized(quantized, loss, indices.view(grid), perplexity, usage)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor, items: int) -> None:
        statistics = torch.zeros(self.num_embeddings, self.embedding_dim + 1, device=flat.device)
        statistics[:, 0] = counts
        statistics[:, 1:].index_add_(0, indices, flat)
        if self.ddp_sync:
            all_reduce_sum_(statistics)
        self.cluster_size.mul_(self.decay).add_(statistics[:, 0], alpha=1.0 - self.decay)
        self.embed_avg.mul_(self.decay).add_(statistics[:, 1:], alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.embedding.weight.copy_(self.embed_avg / smoothed.unsqueeze(1))
        if self.dead_code_restart:
            check_restarts_in_sync("ema", self.ddp_sync)
            self.restart_step += 1
            if int(self.restart_step) % self.restart_every == 0:
                self._restart(flat, items)

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, items: int) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        count = int(dead.sum())
        if count == 0:
            return
        vectors = restart_candidates(flat, count, items)
        self.embedding.weight[dead] = vectors
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_avg[dead] = vectors * self.dead_code_threshold

    def on_epoch_start(self, epoch: int, *, iterations_per_epoch: int, batch_size: int) -> None:
        """Apply the decay warm-up for `epoch` (1-based)."""
        if self.decay_warmup == "none":
            return
        length = self.max_decay_epochs or rule_of_thumb_decay_epochs(iterations_per_epoch, batch_size)
        self.decay = scheduled_decay(epoch, self.initial_decay, self.decay_target, self.decay_warmup, length)

    def summaries(self) -> dict[str, float]:
        return {"decay": float(self.decay), "commitment_cost": float(self.commitment_cost)}
