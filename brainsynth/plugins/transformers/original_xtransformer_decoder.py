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

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import DataError
from brainsynth.core.prior import ConditioningValues

from .original_xtransformer_layers import (
    Attention,
    FeedForward,
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


def norm_function(norm: nn.Module | None):
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


def output_function(attention: Attention):
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
        vectors = prior.condition_vectors(conditioning)
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
        num_self = sum(step[0] == SELF for step in self.plan)
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

    def _plan(self, context: torch.Tensor | None) -> list[tuple]:
        """Per layer, a flat tuple of what a step needs; cross-attention keys/values computed here."""
        plan, self_index = [], 0
        h, dh, inner = self.heads, self.dim_head, self.inner
        layers = self.prior.attn_layers
        for layer_type, (norms, block, _residual) in zip(layers.layer_types, layers.layers):
            pre, post = norm_function(norms[0]), norm_function(norms[1])
            gain = None
            if isinstance(block, Rezero):
                gain, block = block.g, block.fn
            if isinstance(block, FeedForward):
                up, down = block.up(), block.net[3]
                plan.append((FEED_FORWARD, pre, up.weight, up.bias, block.glu, down.weight, down.bias, post, gain))
                continue
            gate = block.to_v_gate
            if layer_type == "a":
                parts = [block.to_q.weight, block.to_k.weight, block.to_v.weight]
                bias = None
                if gate is not None:
                    parts.append(gate.weight)
                    bias = torch.cat([gate.bias.new_zeros(3 * inner), gate.bias])
                plan.append((SELF, pre, torch.cat(parts), bias, self_index, gate is not None, output_function(block), post, gain))
                self_index += 1
            else:
                if context is None:
                    raise DataError("this prior cross-attends to conditioning; pass conditioning values.")
                batch, n, _ = context.shape
                keys = F.linear(context, block.to_k.weight).view(batch, n, h, dh).transpose(1, 2).contiguous()
                values = F.linear(context, block.to_v.weight).view(batch, n, h, dh).transpose(1, 2).contiguous()
                query, bias = block.to_q.weight, None
                if gate is not None:
                    query = torch.cat([query, gate.weight])
                    bias = torch.cat([gate.bias.new_zeros(inner), gate.bias])
                plan.append((CROSS, pre, query, bias, keys, values, gate is not None, output_function(block), post, gain))
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
        scale = dh**-0.5
        rotation = self.rotation[t] if self.rotation is not None else None
        bias = self.attn_bias[:, t : t + 1, : t + 1] if self.attn_bias is not None else None
        for layer in self.plan:
            kind = layer[0]
            normed = layer[1](x) if layer[1] is not None else x
            if kind == SELF:
                _, _, w_in, b_in, index, gated, project_out, post, gain = layer
                projected = F.linear(normed, w_in, b_in)
                qkv = projected[:, : 3 * inner].reshape(batch, 3, h, dh)
                if rotation is not None:
                    qkv = torch.matmul(qkv, rotation)
                k_cache, v_cache = self.keys[index], self.values[index]
                k_cache[:, :, t] = qkv[:, 1]
                v_cache[:, :, t] = qkv[:, 2]
                q = qkv[:, 0].unsqueeze(2)
                k_seen, v_seen = k_cache[:, :, : t + 1], v_cache[:, :, : t + 1]
                if bias is None:
                    out = F.scaled_dot_product_attention(q, k_seen, v_seen, scale=scale)
                else:  # a single query: explicit scores are cheaper than SDPA's masked path
                    scores = torch.add(bias, torch.matmul(q, k_seen.transpose(-1, -2)), alpha=scale)
                    out = torch.matmul(scores.softmax(dim=-1), v_seen)
                out = out.reshape(batch, inner)
                if gated:
                    out = out * torch.sigmoid(projected[:, 3 * inner :])
                out = project_out(out)
            elif kind == CROSS:
                _, _, w_q, b_q, keys, values, gated, project_out, post, gain = layer
                projected = F.linear(normed, w_q, b_q)
                q = projected[:, :inner].reshape(batch, h, 1, dh)
                out = F.scaled_dot_product_attention(q, keys, values, scale=scale).reshape(batch, inner)
                if gated:
                    out = out * torch.sigmoid(projected[:, inner:])
                out = project_out(out)
            else:
                _, _, up, up_bias, glu, down, down_bias, post, gain = layer
                hidden = F.linear(normed, up, up_bias)
                if glu:
                    value, gate = hidden.chunk(2, dim=-1)
                    hidden = value * F.gelu(gate)
                else:
                    hidden = F.gelu(hidden)
                out = F.linear(hidden, down, down_bias)
            if gain is not None:
                out = out * gain
            if post is not None:
                out = post(out)
            x = out + x
        x = self.final_norm(x)
        return F.linear(x, self.head_weight, self.head_bias)
