"""Key/value-cached sampling for ``original_xtransformer``: one token's work per step.

At construction, for one batch: the weights are gathered into fused projections (q, k, v and the
value gate in one matrix), cross-attention keys/values of the conditioning are computed once,
the additive position table (spatial and absolute embeddings), the rotary rotation of every
position and the relative position bias [h, T, T] are built once, and the key/value caches are
preallocated. Each step then embeds one token, writes its (rotated) key and value into the caches
and attends with its query: a row slice of the bias, no concatenation, no per-head loops.

The arithmetic is the original's up to float rounding (the softmax-invariant bias constant is
left out, RMSNorm is torch's fused one); tests check that greedy tokens equal the full forward's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import DataError
from brainsynth.core.prior import ConditioningValues
from brainsynth.library.cached_decoder import feed_forward_step

from .original_xtransformer_layers import (
    Attention,
    FeedForward,
    GRUGating,
    RelativePositionBias,
    RMSNorm,
    Rezero,
    SpatialRelativePositionBias,
    inverse_frequencies,
)

if TYPE_CHECKING:
    from .original_xtransformer import OriginalXTransformerPrior

SELF, CROSS, FEED_FORWARD = 0, 1, 2


def rotation_matrices(rotary_dim: int, dim_head: int, length: int, device: torch.device) -> torch.Tensor:
    """[length, dh, dh] R_t with rotated(x) = x @ R_t: rotate-half rotary on the first `rotary_dim` dims."""
    inv_freq = inverse_frequencies(rotary_dim).to(device=device, dtype=torch.float64)
    angles = torch.arange(length, device=device, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    half = rotary_dim // 2
    first = torch.arange(half, device=device)
    second = first + half
    matrices = torch.eye(dim_head, device=device, dtype=torch.float64).repeat(length, 1, 1)
    # out[i] = x[i] cos - x[i + half] sin ; out[i + half] = x[i + half] cos + x[i] sin
    matrices[:, first, first] = cos
    matrices[:, second, first] = -sin
    matrices[:, second, second] = cos
    matrices[:, first, second] = sin
    return matrices


def norm_function(norm: nn.Module | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A functional form of a pre/post-branch norm (None: no norm)."""
    if norm is None or isinstance(norm, nn.Identity):
        return None
    if isinstance(norm, RMSNorm):
        gain, eps = norm.g, norm.eps
        return lambda x: F.rms_norm(x, (x.shape[-1],), gain, eps * eps)
    if isinstance(norm, nn.LayerNorm):
        weight, bias, eps = norm.weight, norm.bias, norm.eps
        return lambda x: F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    raise TypeError(f"unexpected norm {type(norm).__name__}")


def output_function(attention: Attention) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attention output projection (with the GLU of attention-on-attention)."""
    if attention.on_attn:
        linear = attention.to_out[0]
        return lambda x: F.glu(F.linear(x, linear.weight, linear.bias), dim=-1)
    return lambda x: F.linear(x, attention.to_out.weight, attention.to_out.bias)


class OriginalXTransformerDecoder:
    """Incremental decoding of an `OriginalXTransformerPrior` for one batch (eval mode, no grad)."""

    def __init__(self, prior: OriginalXTransformerPrior, batch_size: int, conditioning: ConditioningValues | None) -> None:
        weight = prior.token_emb.emb.weight
        device, dtype = weight.device, weight.dtype
        self.prior = prior
        self.batch_size = batch_size
        vectors = prior.condition(conditioning)
        if vectors is not None:
            if vectors.shape[0] != batch_size:
                raise DataError(f"conditioning has {vectors.shape[0]} rows for a batch of {batch_size}.")
            vectors = vectors.to(device=device, dtype=dtype)
        h, dh, dim = prior.heads, prior.dim_head, prior.dim
        self.heads, self.dim_head, self.inner = h, dh, h * dh
        prefix_length = prior.prefix_length
        self.max_length = length = prefix_length + prior.sequence_length
        self.position = 0

        bos = weight[-1].expand(batch_size, dim)
        if prior.placement == "prepend":
            self.prefix = [vectors[:, k] for k in range(prefix_length)] + [bos]
        elif prior.placement == "bos":
            self.prefix = [vectors[:, 0]]
        else:
            self.prefix = [bos]
        self.additive = self._position_table(length, device, dtype)

        layers = prior.attn_layers
        rotary = layers.rotary_pos_emb
        self.rotation = (
            rotation_matrices(rotary.inv_freq.numel() * 2, dh, length, device).to(dtype) if rotary is not None else None
        )
        self.attn_bias = self._bias_table(layers.rel_pos, length, device, dtype)
        context = vectors if prior.placement == "context" else None
        self.plan = self._plan(context)
        num_self = sum(step.kind == SELF for step in self.plan)
        self.keys = torch.zeros(num_self, batch_size, h, length, dh, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.final_norm = norm_function(prior.norm)
        if prior.to_logits is None:
            self.head_weight, self.head_bias = weight, None
        else:
            self.head_weight, self.head_bias = prior.to_logits.weight, prior.to_logits.bias

    # -- construction -------------------------------------------------------------------------
    def _position_table(self, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """[T, d] what is added to the input at each position (spatial and absolute embeddings)."""
        prior = self.prior
        if not len(prior.spatial_position_emb) and prior.pos_emb is None:
            return None
        table = torch.zeros(length, prior.dim, device=device, dtype=dtype)
        tokens = prior.sequence_length
        for spatial in prior.spatial_position_emb:
            table[prior.prefix_length :] += spatial(tokens)[0].to(table)
        if prior.pos_emb is not None:
            table += prior.pos_emb(length)[0].to(table)
        return table

    @staticmethod
    def _bias_table(rel_pos: nn.Module | None, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """[h, T, T] additive self-attention bias (the spatial bias's constant is softmax-invariant, so left out)."""
        if rel_pos is None:
            return None
        rows = slice(0, length)
        if isinstance(rel_pos, SpatialRelativePositionBias):
            bias = rel_pos.bias(rows, rows)[0]
        elif isinstance(rel_pos, RelativePositionBias):
            bias = rel_pos.bias(rows, rows, device)[0] * rel_pos.scale
        else:
            raise TypeError(f"unexpected relative position module {type(rel_pos).__name__}")
        return bias.to(device=device, dtype=dtype).contiguous()

    def _plan(self, context: torch.Tensor | None) -> list[LayerStep]:
        """Per layer, what a step needs; cross-attention keys/values computed here, once."""
        plan, self_index = [], 0
        h, dh, inner = self.heads, self.dim_head, self.inner
        layers = self.prior.attn_layers
        for layer_type, (norms, block, residual) in zip(layers.layer_types, layers.layers):
            step = LayerStep()
            step.pre, step.post, step.post_main = (norm_function(norm) for norm in norms)
            step.gru = residual.gru if isinstance(residual, GRUGating) else None
            if isinstance(block, Rezero):
                step.gain, block = block.g, block.fn
            if isinstance(block, FeedForward):
                step.kind = FEED_FORWARD
                up, down = block.up(), block.net[3]
                step.weights = (up.weight, up.bias, block.glu, down.weight, down.bias)
                plan.append(step)
                continue
            gate = block.to_v_gate
            step.gated = gate is not None
            step.project_out = output_function(block)
            step.scale = block.score_scale()
            step.qk_norm = block.qk_norm
            if block.talking_heads:
                step.talking = (block.pre_softmax_talking_heads.weight, block.post_softmax_talking_heads.weight)
            if layer_type == "a":
                step.kind, step.index = SELF, self_index
                step.residual_scores = layers.residual_attn
                self_index += 1
                parts = [block.to_q.weight, block.to_k.weight, block.to_v.weight]
                if gate is not None:
                    parts.append(gate.weight)
                    step.bias = torch.cat([gate.bias.new_zeros(3 * inner), gate.bias])
                step.weight = torch.cat(parts)
            else:
                if context is None:
                    raise DataError("this prior cross-attends to conditioning; pass conditioning values.")
                step.kind = CROSS
                step.residual_scores = layers.cross_residual_attn
                batch, n, _ = context.shape
                keys = F.linear(context, block.to_k.weight).view(batch, n, h, dh).transpose(1, 2)
                if block.qk_norm:
                    keys = F.normalize(keys, p=2, dim=-1)
                values = F.linear(context, block.to_v.weight).view(batch, n, h, dh).transpose(1, 2)
                step.context = (keys.contiguous(), values.contiguous())
                step.weight = block.to_q.weight
                if gate is not None:
                    step.weight = torch.cat([block.to_q.weight, gate.weight])
                    step.bias = torch.cat([gate.bias.new_zeros(inner), gate.bias])
            plan.append(step)
        return plan

    # -- decoding -----------------------------------------------------------------------------
    def start(self) -> torch.Tensor:
        logits = None
        for embedding in self.prefix:
            logits = self._advance(embedding)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._advance(F.embedding(tokens, self.prior.token_emb.emb.weight))

    def _advance(self, x: torch.Tensor) -> torch.Tensor:
        """Run one position (input embedding x [B, d]); return the logits [B, V] it predicts."""
        t = self.position
        if t >= self.max_length:
            raise RuntimeError(f"decoder is full ({self.max_length} positions)")
        self.position = t + 1
        if self.additive is not None:
            x = x + self.additive[t]
        batch, h, dh, inner = x.shape[0], self.heads, self.dim_head, self.inner
        rotation = self.rotation[t] if self.rotation is not None else None
        bias = self.attn_bias[:, t : t + 1, : t + 1] if self.attn_bias is not None else None
        prev_scores = prev_cross_scores = None
        for step in self.plan:
            kind = step.kind
            normed = step.pre(x) if step.pre is not None else x
            if kind == SELF:
                projected = F.linear(normed, step.weight, step.bias)
                qkv = projected[:, : 3 * inner].reshape(batch, 3, h, dh)
                if rotation is not None:
                    qkv = torch.matmul(qkv, rotation)
                k_cache, v_cache = self.keys[step.index], self.values[step.index]
                q, k = qkv[:, 0].unsqueeze(2), qkv[:, 1]
                if step.qk_norm:
                    q, k = F.normalize(q, p=2, dim=-1), F.normalize(k, p=2, dim=-1)
                k_cache[:, :, t] = k
                v_cache[:, :, t] = qkv[:, 2]
                out, scores = self._attend(step, q, k_cache[:, :, : t + 1], v_cache[:, :, : t + 1], bias, prev_scores)
                if step.residual_scores:
                    prev_scores = scores
                out = out.reshape(batch, inner)
                if step.gated:
                    out = out * torch.sigmoid(projected[:, 3 * inner :])
                out = step.project_out(out)
            elif kind == CROSS:
                projected = F.linear(normed, step.weight, step.bias)
                q = projected[:, :inner].reshape(batch, h, 1, dh)
                if step.qk_norm:
                    q = F.normalize(q, p=2, dim=-1)
                keys, values = step.context
                out, scores = self._attend(step, q, keys, values, None, prev_cross_scores)
                if step.residual_scores:
                    prev_cross_scores = scores
                out = out.reshape(batch, inner)
                if step.gated:
                    out = out * torch.sigmoid(projected[:, inner:])
                out = step.project_out(out)
            else:
                up, up_bias, glu, down, down_bias = step.weights
                out = feed_forward_step(normed, up, up_bias, down, down_bias, glu)
            if step.gain is not None:
                out = out * step.gain
            if step.post is not None:
                out = step.post(out)
            x = step.gru(out, x) if step.gru is not None else out + x
            if step.post_main is not None:
                x = step.post_main(x)
        x = self.final_norm(x)
        return F.linear(x, self.head_weight, self.head_bias)

    @staticmethod
    def _attend(
        step: LayerStep,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        bias: torch.Tensor | None,
        prev_scores: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query row per sequence [B, h, 1, dh] against the keys/values seen; (output, pre-softmax scores)."""
        plain = step.talking is None and prev_scores is None and not step.residual_scores and not step.qk_norm
        if plain and bias is None:
            return F.scaled_dot_product_attention(q, keys, values, scale=step.scale), None
        if plain:  # a single query: explicit scores are cheaper than SDPA's masked path
            scores = torch.add(bias, torch.matmul(q, keys.transpose(-1, -2)), alpha=step.scale)
            return torch.matmul(scores.softmax(dim=-1), values), None
        scores = torch.matmul(q, keys.transpose(-1, -2)) * step.scale
        if prev_scores is not None:
            scores = scores + prev_scores
        pre_softmax = scores
        if step.talking is not None:
            scores = F.conv2d(scores, step.talking[0])
        if bias is not None:
            scores = scores + bias
        weights = scores.softmax(dim=-1)
        if step.talking is not None:
            weights = F.conv2d(weights, step.talking[1])
        return torch.matmul(weights, values), pre_softmax


class LayerStep:
    """What one layer of the cached step needs (weights gathered once per batch)."""

    __slots__ = (
        "kind", "pre", "post", "post_main", "gru", "gain", "weight", "bias", "index", "context", "gated",
        "project_out", "scale", "qk_norm", "talking", "residual_scores", "weights",
    )

    def __init__(self) -> None:
        self.kind = FEED_FORWARD
        self.pre = self.post = self.post_main = self.gru = self.gain = None
        self.weight = self.bias = self.context = self.project_out = self.talking = self.weights = None
        self.index = 0
        self.gated = self.qk_norm = self.residual_scores = False
        self.scale: float | torch.Tensor = 1.0
