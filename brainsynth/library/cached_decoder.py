"""The fast sampling path a prior network can offer: a key/value-cached pre-norm decoder.

A prior exports its weights as a `DecoderWeights` (self-attention, optional cross-attention,
feed-forward per layer) and `CachedDecoder` runs one token per step over them: the new token's
keys/values are written into preallocated buffers, its query attends to them with SDPA,
cross-attention keys/values of the conditioning are computed once per batch, an additive attention
bias (a spatial relative position bias) is a row slice of a matrix built once, and rotary embeddings
are one small matmul with a precomputed rotation. The sampler (`brainsynth.core.sampling.sample`)
drives it through the `TokenDecoder` contract like any other decoder; it lives here, not in core,
because it is one implementation that several networks share, not part of the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from brainsynth.core.errors import DataError

# --------------------------------------------------------------------------------------------
# Exported decoder weights
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AttentionWeights:
    """One pre-norm attention sub-layer. Projections are [out, in] like `nn.Linear.weight`.

    Self-attention: `query` is the fused [q; k; v; (gate)] projection of the normed input.
    Cross-attention: `query` is [q; (gate)] and `key_value` is [k; v] applied to the context.
    """

    norm: torch.Tensor
    query: torch.Tensor
    out: torch.Tensor
    key_value: torch.Tensor | None = None
    gated: bool = False
    post_norm: torch.Tensor | None = None

    @property
    def cross(self) -> bool:
        return self.key_value is not None


@dataclasses.dataclass
class FeedForwardWeights:
    """One pre-norm feed-forward sub-layer: up (GELU, or GLU: first half * gelu(second half)) -> down."""

    norm: torch.Tensor
    up: torch.Tensor
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    glu: bool = False
    post_norm: torch.Tensor | None = None


@dataclasses.dataclass
class DecoderWeights:
    """A pre-norm causal decoder, as the cached sampler runs it.

    `position_embedding` [T, d] is added to the input at each position (absolute and spatial
    position embeddings summed; None if the prior has none). Norm gains are final (any unit
    offset already added). `norm` is ``layer`` (bias-free LayerNorm, eps `norm_eps`) or ``rms``.
    With `qk_norm`, queries and keys are l2-normalised per head before the rotary embedding.
    `rotary_inv_freq` [r/2] rotates the first r dims of each head, interleaved pairs (x-transformers'
    convention), on queries and keys of self-attention only.
    """

    token_embedding: torch.Tensor
    layers: list[AttentionWeights | FeedForwardWeights]
    head: torch.Tensor
    heads: int
    dim_head: int
    attention_scale: float
    norm: Literal["layer", "rms"] = "layer"
    norm_eps: float = 1e-5
    final_norm: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    position_embedding: torch.Tensor | None = None
    qk_norm: bool = False
    rotary_inv_freq: torch.Tensor | None = None


def rotary_matrices(inv_freq: torch.Tensor, length: int, dim_head: int) -> torch.Tensor:
    """[length, dh, dh] matrices R_t with rotated(x) = x @ R_t (interleaved pairs, first 2*len(inv_freq) dims)."""
    positions = torch.arange(length, dtype=inv_freq.dtype, device=inv_freq.device)
    angles = positions[:, None] * inv_freq[None, :]  # [T, r/2]
    cos, sin = angles.cos(), angles.sin()
    matrices = torch.eye(dim_head, dtype=inv_freq.dtype, device=inv_freq.device).repeat(length, 1, 1)
    even = torch.arange(0, 2 * inv_freq.numel(), 2, device=inv_freq.device)
    odd = even + 1
    # out[2i] = x[2i] cos - x[2i+1] sin ; out[2i+1] = x[2i+1] cos + x[2i] sin
    matrices[:, even, even] = cos
    matrices[:, odd, even] = -sin
    matrices[:, even, odd] = sin
    matrices[:, odd, odd] = cos
    return matrices


def feed_forward_step(
    x: torch.Tensor,
    up: torch.Tensor,
    up_bias: torch.Tensor | None,
    down: torch.Tensor,
    down_bias: torch.Tensor | None,
    glu: bool,
) -> torch.Tensor:
    """One feed-forward sub-layer on normed inputs: up, GELU (or GLU: value * gelu(gate)), down."""
    hidden = F.linear(x, up, up_bias)
    if glu:
        value, gate = hidden.chunk(2, dim=-1)
        hidden = value * F.gelu(gate)
    else:
        hidden = F.gelu(hidden)
    return F.linear(hidden, down, down_bias)


# --------------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------------
class CachedDecoder:
    """Key/value-cached incremental decoding of a `DecoderWeights` model for one batch.

    `prefix` [B, P, d] holds the input embeddings (before positions) of the positions that come
    before the first sampled token: prepended conditioning vectors, then BOS (or its replacement).
    `context` [B, n, d_ctx] is the cross-attention context; `attn_bias` [heads, T, T] an additive
    self-attention bias over all T = P + L - 1 input positions (or more).
    """

    def __init__(
        self,
        weights: DecoderWeights,
        prefix: torch.Tensor,
        max_length: int,
        context: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> None:
        self.weights = weights
        self.prefix = prefix
        self.batch_size = prefix.shape[0]
        self.max_length = max_length
        self.position = 0
        w = weights
        device, dtype = prefix.device, prefix.dtype
        h, dh = w.heads, w.dim_head
        if attn_bias is not None:
            if attn_bias.shape[0] != h or min(attn_bias.shape[1:]) < max_length:
                raise ValueError(f"attn_bias {tuple(attn_bias.shape)} does not cover {h} heads x {max_length} positions")
            attn_bias = attn_bias.to(device=device, dtype=dtype)
        self.attn_bias = attn_bias
        if w.position_embedding is not None and w.position_embedding.shape[0] < max_length:
            raise ValueError(f"position embedding covers {w.position_embedding.shape[0]} < {max_length} positions")
        self.rotation = (
            rotary_matrices(w.rotary_inv_freq.to(device=device, dtype=torch.float64), max_length, dh).to(dtype)
            if w.rotary_inv_freq is not None
            else None
        )
        num_self = sum(isinstance(layer, AttentionWeights) and not layer.cross for layer in w.layers)
        self.keys = torch.zeros(num_self, self.batch_size, h, max_length, dh, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.plan = self._plan(context)
        norm_eps = w.norm_eps
        if w.norm == "rms":
            self.normalise: Callable = lambda x, gain: F.rms_norm(x, (x.shape[-1],), gain, norm_eps)
        else:
            self.normalise = lambda x, gain: F.layer_norm(x, (x.shape[-1],), gain, None, norm_eps)

    def _plan(self, context: torch.Tensor | None) -> list[tuple]:
        """Per layer, a flat tuple of what the step needs; cross-attention K/V computed here, once."""
        w, plan, self_index = self.weights, [], 0
        h, dh = w.heads, w.dim_head
        for layer in w.layers:
            if isinstance(layer, FeedForwardWeights):
                plan.append((2, layer.norm, layer.up, layer.up_bias, layer.down, layer.down_bias, layer.glu, layer.post_norm))
            elif layer.cross:
                if context is None:
                    raise DataError("this prior cross-attends to conditioning; pass conditioning values.")
                kv = F.linear(context, layer.key_value)  # [B, n, 2*h*dh]
                batch, n = kv.shape[:2]
                kv = kv.view(batch, n, 2, h, dh).permute(2, 0, 3, 1, 4)  # [2, B, h, n, dh]
                k, v = kv[0], kv[1]
                if w.qk_norm:
                    k = F.normalize(k, dim=-1)
                plan.append((1, layer.norm, layer.query, k.contiguous(), v.contiguous(), layer.out, layer.gated, layer.post_norm))
            else:
                plan.append((0, layer.norm, layer.query, self_index, layer.out, layer.gated, layer.post_norm))
                self_index += 1
        return plan

    def start(self) -> torch.Tensor:
        logits = None
        for i in range(self.prefix.shape[1]):
            logits = self._advance(self.prefix[:, i])
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._advance(F.embedding(tokens, self.weights.token_embedding))

    def _advance(self, x: torch.Tensor) -> torch.Tensor:
        """Run one position (input embedding x [B, d]); return the logits [B, V] it predicts."""
        t = self.position
        if t >= self.max_length:
            raise RuntimeError(f"decoder is full ({self.max_length} positions)")
        self.position = t + 1
        w = self.weights
        if w.position_embedding is not None:
            x = x + w.position_embedding[t]
        batch, h, dh = x.shape[0], w.heads, w.dim_head
        inner = h * dh
        scale, qk_norm, normalise = w.attention_scale, w.qk_norm, self.normalise
        rotation = self.rotation[t] if self.rotation is not None else None
        bias = self.attn_bias[:, t : t + 1, : t + 1] if self.attn_bias is not None else None
        keys, values = self.keys, self.values
        for layer in self.plan:
            kind = layer[0]
            if kind == 0:
                _, norm, w_in, index, w_out, gated, post = layer
                projected = F.linear(normalise(x, norm), w_in)
                qk = projected[:, : 2 * inner].view(batch, 2 * h, 1, dh)
                if qk_norm:
                    qk = F.normalize(qk, dim=-1)
                if rotation is not None:
                    qk = torch.matmul(qk, rotation)
                k_cache, v_cache = keys[index], values[index]
                k_cache[:, :, t] = qk[:, h:, 0]
                v_cache[:, :, t] = projected[:, 2 * inner : 3 * inner].view(batch, h, dh)
                k_seen, v_seen = k_cache[:, :, : t + 1], v_cache[:, :, : t + 1]
                if bias is None:
                    out = F.scaled_dot_product_attention(qk[:, :h], k_seen, v_seen, scale=scale)
                else:  # cheaper than SDPA's masked CPU path for a single query
                    scores = torch.add(bias, torch.matmul(qk[:, :h], k_seen.transpose(-1, -2)), alpha=scale)
                    out = torch.matmul(scores.softmax(dim=-1), v_seen)
                out = out.reshape(batch, inner)
                if gated:
                    out = out * torch.sigmoid(projected[:, 3 * inner :])
                out = F.linear(out, w_out)
            elif kind == 1:
                _, norm, w_q, k, v, w_out, gated, post = layer
                projected = F.linear(normalise(x, norm), w_q)
                q = projected[:, :inner].view(batch, h, 1, dh)
                if qk_norm:
                    q = F.normalize(q, dim=-1)
                out = F.scaled_dot_product_attention(q, k, v, scale=scale).reshape(batch, inner)
                if gated:
                    out = out * torch.sigmoid(projected[:, inner:])
                out = F.linear(out, w_out)
            else:
                _, norm, up, up_bias, down, down_bias, glu, post = layer
                out = feed_forward_step(normalise(x, norm), up, up_bias, down, down_bias, glu)
            if post is not None:
                out = normalise(out, post)
            x = x + out
        if w.final_norm is not None:
            x = normalise(x, w.final_norm)
        return F.linear(x, w.head, w.head_bias)
