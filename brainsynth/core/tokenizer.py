"""The tokenizer contract: what the engine needs from a VQ-VAE, its codebook and its losses.

A tokenizer turns a volume ``[B, C, *spatial]`` into a grid of code indices ``[B, *grid]`` and
back. The engine trains it (``forward`` + a `ReconstructionLoss` + the quantisation loss),
extracts tokens (`Tokenizer.encode_tokens`), decodes token grids (`Tokenizer.decode_tokens`) and
logs codebook health (perplexity, code usage). Networks subclass `Tokenizer` and implement
`encode`, `decode`, `token_grid` and `output_shape`; everything else is shared.

A codebook (`Codebook`) owns the code vectors and the nearest-code search. Its `quantize`
returns a `Quantized` record; its training-time update (EMA statistics, dead-code restarts)
happens inside `quantize` when the module is in training mode, and never in eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from .errors import DataError


@dataclasses.dataclass
class Quantized:
    """What a codebook returns for an encoder output ``z`` of shape ``[B, D, *grid]``."""

    quantized: torch.Tensor
    """``[B, D, *grid]`` code vectors with straight-through gradients to ``z`` (fp32)."""
    loss: torch.Tensor
    """Scalar quantisation loss (commitment, plus the codebook term for trained codebooks)."""
    indices: torch.Tensor
    """``[B, *grid]`` long tensor of code indices."""
    perplexity: torch.Tensor
    """Scalar ``exp(entropy)`` of the code histogram of this batch (1 = one code, K = uniform)."""
    usage: torch.Tensor
    """Scalar fraction of the K codes used at least once in this batch."""


@dataclasses.dataclass
class TokenizerOutput:
    """What `Tokenizer.forward` returns."""

    reconstruction: torch.Tensor
    """``[B, C, *spatial]``, same shape as the input."""
    quantization_loss: torch.Tensor
    """Scalar; the engine adds it to the reconstruction loss."""
    tokens: torch.Tensor
    """``[B, *grid]`` long tensor of code indices."""
    perplexity: torch.Tensor
    code_usage: torch.Tensor


class Codebook(nn.Module):
    """Nearest-code quantiser with `num_embeddings` codes of size `embedding_dim`.

    Subclasses implement `quantize` and `codes`. The engine calls `on_epoch_start` at the start
    of every training epoch (schedules such as the EMA decay warm-up hang off it) and logs
    `summaries`.
    """

    num_embeddings: int
    embedding_dim: int

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Quantise channel-first encoder output ``[B, D, *grid]``; update the codes if training."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> Quantized:
        return self.quantize(z)

    @property
    def codes(self) -> torch.Tensor:
        """The ``[K, D]`` code vectors."""
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``[B, *grid]`` indices, channel first: ``[B, D, *grid]``."""
        vectors = nn.functional.embedding(indices.long(), self.codes.float())
        return torch.movedim(vectors, -1, 1).contiguous()

    def on_epoch_start(self, epoch: int, *, iterations_per_epoch: int, batch_size: int) -> None:
        """Called by the engine before training epoch `epoch` (1-based). Default: nothing."""

    def summaries(self) -> dict[str, float]:
        """Scalars worth logging (decay, commitment cost, ...)."""
        return {}


class Tokenizer(nn.Module):
    """A VQ-VAE: `encode` → `codebook` → `decode`.

    Subclasses set ``self.codebook`` (a `Codebook`), ``self.spatial_dims`` and
    ``self.in_channels``, and implement `encode`, `decode`, `token_grid`, `output_shape` and
    `last_layer_weight`.
    """

    codebook: Codebook
    spatial_dims: int
    in_channels: int

    # -- implemented by networks -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, *spatial]`` → encoder output ``[B, D, *grid]`` (before quantisation)."""
        raise NotImplementedError

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, D, *grid]`` → volume ``[B, C, *spatial]``."""
        raise NotImplementedError

    def token_grid(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The token grid a volume of `spatial_shape` is encoded into."""
        raise NotImplementedError

    def output_shape(self, grid: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape `decode` produces from a token grid of shape `grid`."""
        raise NotImplementedError

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """Weight of the decoder's last layer (the VQGAN adaptive adversarial weight needs it)."""
        raise NotImplementedError

    @property
    def downsampling(self) -> int | None:
        """Voxels per token along each axis (the product of the encoder's strides); None when a
        network has no single factor. Only messages use it: `check_spatial_shape` decides."""
        return None

    # -- shared ---------------------------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self.codebook.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.codebook.embedding_dim

    def quantize(self, z: torch.Tensor) -> Quantized:
        return self.codebook.quantize(z)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self.quantize(self.encode(x))
        return TokenizerOutput(
            reconstruction=self.decode(q.quantized),
            quantization_loss=q.loss,
            tokens=q.indices,
            perplexity=q.perplexity,
            code_usage=q.usage,
        )

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Volumes ``[B, C, *spatial]`` → token grids ``[B, *grid]`` (long)."""
        return self.quantize(self.encode(x)).indices

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token grids ``[B, *grid]`` → volumes ``[B, C, *spatial]``; out-of-range ids are refused."""
        if tokens.dim() != self.spatial_dims + 1:
            raise DataError(
                f"token grids must be [batch, {', '.join('n' * self.spatial_dims)}] for this "
                f"{self.spatial_dims}D tokenizer; got shape {tuple(tokens.shape)}."
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.num_embeddings):
            bad = int(tokens.max()) if int(tokens.max()) >= self.num_embeddings else int(tokens.min())
            raise DataError(
                f"token {bad} is outside the codebook [0, {self.num_embeddings}); the grid comes from "
                f"another tokenizer or the sampler emitted a special token."
            )
        return self.decode(self.codebook.lookup(tokens))

    def check_spatial_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The token grid of `spatial_shape`, or a DataError if decoding would change the shape."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != self.spatial_dims:
            raise DataError(f"a {self.spatial_dims}D tokenizer cannot read a volume of shape {shape}.")
        grid = self.token_grid(shape)
        if min(grid) < 1 or self.output_shape(grid) != shape:
            factor = math.prod(shape) / max(math.prod(grid), 1)
            raise DataError(
                f"a volume of shape {'x'.join(map(str, shape))} does not survive encoding and decoding "
                f"(tokens {'x'.join(map(str, grid))} decode to {'x'.join(map(str, self.output_shape(grid)))}, "
                f"about {factor:.0f} voxels per token). Crop or pad the volume (data.roi) to a size the "
                f"down-sampling levels divide exactly."
            )
        return grid


@dataclasses.dataclass
class LossOutput:
    """A reconstruction loss: the total to back-propagate and its named, unweighted parts."""

    total: torch.Tensor
    components: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


class ReconstructionLoss(nn.Module):
    """``loss(reconstruction, target) -> LossOutput``; the engine adds the quantisation loss."""

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the run log (e.g. which perceptual weights are in use)."""
        return type(self).__name__
