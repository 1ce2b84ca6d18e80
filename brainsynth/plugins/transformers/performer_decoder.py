"""Recurrent decoding of a `PerformerPrior`: one token's work per step.

performer-pytorch has no cache, and the original sampler re-ran the whole prefix per token
(O(L^2) work, with the library's CPU causal path materialising a features x head-width tensor per
position). This decoder reproduces what that full eval forward computes at the last position of
each growing prefix, from state carried between steps:

* global (FAVOR+) heads keep running sums of phi(k) (x) v and phi(k). The library's softmax
  kernel subtracts, for keys, the maximum projection over *all* positions and features of the
  sequence it sees, then adds eps = 1e-4; so the sums are kept relative to the running maximum
  (rescaled when it grows, as in online softmax) with the eps part as a separate running sum of
  v, and combined exactly as the library would with the prefix's maximum. The causal path's
  denominator adds 1e-6 to the cumulated key features.
* local heads (local-attention 1.11.2, ``look_backward=1``, causal, autopad) see the positions of
  their own bucket of `window` positions up to themselves and the whole previous bucket; its
  rotary embedding is indexed by the position inside that two-bucket window (queries at
  window + i, keys at 0 .. 2 * window - 1), so the cache holds the window's keys already
  rotated at those indices and re-rotates the previous bucket when a new one starts.
* cross-attention (non-causal FAVOR+ over the conditioning context) is one fixed state per layer.

State math runs in float32 with autocast off, whatever the model's dtype (sums over 1400 positions
in bfloat16 would drift); projections, feed-forwards and norms follow the caller's autocast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import DataError

if TYPE_CHECKING:
    from brainsynth.core.prior import ConditioningValues

    from .performer import PerformerPrior

_KEY_EPS = 1e-4
"""performer-pytorch's softmax-kernel stabiliser, added to every feature."""
_DENOMINATOR_EPS = 1e-6
"""Added to the cumulated key features in the library's causal denominator."""
_GENERALIZED_EPS = 1e-3
"""performer-pytorch's generalized-kernel epsilon."""


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """performer's rotary pairing: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """local-attention's rotary pairing: (a, b) halves -> (-b, a)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class _Wrapper:
    """The pre-branch wrapper of one performer block: LayerNorm, ScaleNorm or ReZero."""

    def __init__(self, module: nn.Module) -> None:
        name = type(module).__name__
        if name not in ("PreLayerNorm", "PreScaleNorm", "ReZero"):
            raise RuntimeError(f"performer decoder: unexpected block wrapper {name}")
        self.module = module
        self.kind = name
        self.fn = module.fn

    def before(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "PreLayerNorm":
            return self.module.norm(x)
        if self.kind == "PreScaleNorm":
            return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=self.module.eps) * self.module.g
        return x

    def after(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.module.g if self.kind == "ReZero" else out


class _FeatureMap:
    """FAVOR+ features of queries / keys [..., dh] -> [..., m], as performer-pytorch computes them."""

    def __init__(self, fast_attention: nn.Module) -> None:
        if fast_attention.no_projection:
            raise RuntimeError("performer decoder: no_projection attention is not supported")
        self.projection = fast_attention.projection_matrix.float()  # [m, dh]
        self.generalized = bool(fast_attention.generalized_attention)
        self.kernel_fn = fast_attention.kernel_fn
        dh, m = self.projection.shape[1], self.projection.shape[0]
        self.normalizer = dh**-0.25
        self.ratio = m**-0.5

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.normalizer * x, self.projection.t())

    def query(self, q: torch.Tensor) -> torch.Tensor:
        dash = self.project(q)
        if self.generalized:
            return self.kernel_fn(dash) + _GENERALIZED_EPS
        diag = (q**2).sum(dim=-1, keepdim=True) / 2.0 * self.normalizer**2
        return self.ratio * (torch.exp(dash - diag - dash.amax(dim=-1, keepdim=True)) + _KEY_EPS)

    def key_exponent(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection - |k|^2 / 2 scaled, max projection over features): the key's unshifted exponent."""
        dash = self.project(k)
        diag = (k**2).sum(dim=-1, keepdim=True) / 2.0 * self.normalizer**2
        return dash - diag, dash.amax(dim=-1)

    def keys(self, k: torch.Tensor) -> torch.Tensor:
        """Non-causal key features of a whole context [B, h, n, dh] (max over its positions and features)."""
        if self.generalized:
            return self.kernel_fn(self.project(k)) + _GENERALIZED_EPS
        exponent, peak = self.key_exponent(k)
        shift = peak.amax(dim=-1)[..., None, None]
        return self.ratio * (torch.exp(exponent - shift) + _KEY_EPS)


class _SelfAttentionState:
    """One self-attention layer's state: FAVOR+ running sums (global heads), window cache (local heads)."""

    def __init__(self, attention: nn.Module, batch: int, device: torch.device, rotary: torch.Tensor | None) -> None:
        self.attention = attention
        self.heads = attention.heads
        self.global_heads = attention.global_heads
        self.local_heads = self.heads - self.global_heads
        dh = attention.to_q.out_features // self.heads
        self.dim_head = dh
        self.rotary = rotary  # [T, dh] performer's cat(sin, cos) rows, or None
        f32 = dict(device=device, dtype=torch.float32)
        if self.global_heads:
            self.features = _FeatureMap(attention.fast_attention)
            m, g = self.features.projection.shape[0], self.global_heads
            self.context = torch.zeros(batch, g, m, dh, **f32)  # sum of exp(.) (x) v, relative to `peak`
            self.normaliser = torch.zeros(batch, g, m, **f32)  # sum of exp(.)
            self.value_sum = torch.zeros(batch, g, 1, dh, **f32)
            self.peak = torch.full((batch, g), float("-inf"), **f32)
            self.count = 0
        if self.local_heads:
            local = attention.local_attn
            self.window = w = int(local.window_size)
            if local.look_backward != 1 or local.look_forward != 0 or not local.causal or local.exact_windowsize:
                raise RuntimeError("performer decoder: expects causal local attention with look_backward=1")
            if local.rel_pos is None or local.rel_pos.use_xpos or local.shared_qk:
                raise RuntimeError("performer decoder: expects local attention with plain rotary embeddings")
            self.local_scale = local.scale if local.scale is not None else dh**-0.5
            angles = torch.arange(2 * w, device=device).float()[:, None] * local.rel_pos.inv_freq.float()[None, :]
            angles = torch.cat((angles, angles), dim=-1)
            self.local_cos, self.local_sin = angles.cos(), angles.sin()  # [2w, dh]
            lh = self.local_heads
            self.keys = torch.zeros(batch, lh, 2 * w, dh, **f32)  # rotated at their look-around index
            self.values = torch.zeros(batch, lh, 2 * w, dh, **f32)
            self.current_raw = torch.zeros(batch, lh, w, dh, **f32)

    def step(self, h: torch.Tensor, t: int) -> torch.Tensor:
        """Normed input h [B, d] at position t -> the attention output [B, d]."""
        a = self.attention
        batch, heads, dh = h.shape[0], self.heads, self.dim_head
        q = F.linear(h, a.to_q.weight, a.to_q.bias).view(batch, heads, dh)
        k = F.linear(h, a.to_k.weight, a.to_k.bias).view(batch, heads, dh)
        v = F.linear(h, a.to_v.weight, a.to_v.bias).view(batch, heads, dh)
        outs = []
        with torch.autocast(h.device.type, enabled=False):
            q, k, v = q.float(), k.float(), v.float()
            g = self.global_heads
            if g:
                outs.append(self._global(q[:, :g], k[:, :g], v[:, :g], t))
            if self.local_heads:
                outs.append(self._local(q[:, g:], k[:, g:], v[:, g:], t))
        out = torch.cat(outs, dim=1).reshape(batch, heads * dh).to(h.dtype)
        return F.linear(out, a.to_out.weight, a.to_out.bias)

    def _global(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
        if self.rotary is not None:
            row = self.rotary[t].float()
            sin, cos = row.chunk(2)
            sin, cos = sin.repeat_interleave(2), cos.repeat_interleave(2)
            q = q * cos + _rotate_every_two(q) * sin
            k = k * cos + _rotate_every_two(k) * sin
        features = self.features
        q_features = features.query(q)  # [B, g, m]
        self.count += 1
        if features.generalized:
            k_features = features.kernel_fn(features.project(k)) + _GENERALIZED_EPS
            self.context += k_features[..., :, None] * v[..., None, :]
            self.normaliser += k_features
            context, normaliser = self.context, self.normaliser
        else:
            exponent, peak = features.key_exponent(k)
            new_peak = torch.maximum(self.peak, peak)
            rescale = torch.exp(self.peak - new_peak)
            self.peak = new_peak
            weights = torch.exp(exponent - new_peak[..., None])  # [B, g, m]
            self.context.mul_(rescale[..., None, None]).add_(weights[..., :, None] * v[..., None, :])
            self.normaliser.mul_(rescale[..., None]).add_(weights)
            self.value_sum += v[..., None, :]
            ratio = features.ratio
            context = ratio * (self.context + _KEY_EPS * self.value_sum)
            normaliser = ratio * (self.normaliser + _KEY_EPS * self.count)
        denominator = (q_features * (normaliser + _DENOMINATOR_EPS)).sum(dim=-1, keepdim=True)
        return torch.matmul(q_features[..., None, :], context)[..., 0, :] / denominator

    def _local(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
        w = self.window
        bucket, i = divmod(t, w)
        if i == 0 and bucket > 0:  # the finished bucket becomes the look-back half, at indices 0 .. w-1
            cos, sin = self.local_cos[:w], self.local_sin[:w]
            self.keys[:, :, :w] = self.current_raw * cos + _rotate_half(self.current_raw) * sin
            self.values[:, :, :w] = self.values[:, :, w:]
        slot = w + i
        cos, sin = self.local_cos[slot], self.local_sin[slot]
        self.current_raw[:, :, i] = k
        self.keys[:, :, slot] = k * cos + _rotate_half(k) * sin
        self.values[:, :, slot] = v
        q = q * self.local_scale
        q = q * cos + _rotate_half(q) * sin
        start = 0 if bucket > 0 else w
        keys, values = self.keys[:, :, start : slot + 1], self.values[:, :, start : slot + 1]
        scores = torch.matmul(keys, q[..., None])[..., 0]  # [B, lh, n]
        return torch.matmul(scores.softmax(dim=-1)[..., None, :], values)[..., 0, :]


class _CrossAttentionState:
    """One cross-attention layer: the context's FAVOR+ sums, computed once per batch."""

    def __init__(self, attention: nn.Module, context: torch.Tensor) -> None:
        self.attention = attention
        self.heads = attention.heads
        self.dim_head = attention.to_q.out_features // self.heads
        self.features = _FeatureMap(attention.fast_attention)
        batch, n = context.shape[:2]
        k = F.linear(context, attention.to_k.weight, attention.to_k.bias)
        v = F.linear(context, attention.to_v.weight, attention.to_v.bias)
        with torch.autocast(context.device.type, enabled=False):
            k = k.float().view(batch, n, self.heads, self.dim_head).transpose(1, 2)
            v = v.float().view(batch, n, self.heads, self.dim_head).transpose(1, 2)
            k_features = self.features.keys(k)  # [B, h, n, m]
            self.context = torch.matmul(k_features.transpose(-1, -2), v)  # [B, h, m, dh]
            self.normaliser = k_features.sum(dim=-2)  # [B, h, m]

    def step(self, h: torch.Tensor) -> torch.Tensor:
        a = self.attention
        batch = h.shape[0]
        q = F.linear(h, a.to_q.weight, a.to_q.bias).view(batch, self.heads, self.dim_head)
        with torch.autocast(h.device.type, enabled=False):
            q_features = self.features.query(q.float())
            denominator = (q_features * self.normaliser).sum(dim=-1, keepdim=True)
            out = torch.matmul(q_features[..., None, :], self.context)[..., 0, :] / denominator
        out = out.reshape(batch, self.heads * self.dim_head).to(h.dtype)
        return F.linear(out, a.to_out.weight, a.to_out.bias)


class PerformerDecoder:
    """The `TokenDecoder` of a `PerformerPrior` (call in eval mode, under inference_mode)."""

    def __init__(self, prior: PerformerPrior, batch_size: int, conditioning: ConditioningValues | None = None) -> None:
        self.prior = prior
        vectors = prior.condition(conditioning)
        if vectors is not None and vectors.shape[0] != batch_size:
            raise DataError(f"conditioning has {vectors.shape[0]} rows for a batch of {batch_size}.")
        inputs = prior.inputs
        self.prefix = inputs.prefix(vectors, batch_size)  # [B, P + 1, d]
        device = self.prefix.device
        self.max_length = inputs.total_length
        table = inputs.position_table()
        self.positions = table.detach() if table is not None else None
        rotary = prior.layer_rotary
        context = vectors if prior.cross_attend else None
        if prior.cross_attend and context is None:
            raise DataError("this prior cross-attends to conditioning; pass conditioning values.")
        self.blocks: list[tuple[str, _Wrapper, object]] = []
        for attention_wrapper, ff_wrapper in prior.layers.net.layers:
            wrapper = _Wrapper(attention_wrapper)
            attention = wrapper.fn
            if type(attention).__name__ == "CrossAttention":
                state: object = _CrossAttentionState(attention, context.to(self.prefix))
                self.blocks.append(("cross", wrapper, state))
            else:
                self.blocks.append(("self", wrapper, _SelfAttentionState(attention, batch_size, device, rotary)))
            self.blocks.append(("ff", _Wrapper(ff_wrapper), ff_wrapper))
        self.position = 0

    def start(self) -> torch.Tensor:
        logits = None
        for i in range(self.prefix.shape[1]):
            logits = self._advance(self.prefix[:, i])
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._advance(self.prior.inputs.token_embedding(tokens))

    def _advance(self, x: torch.Tensor) -> torch.Tensor:
        """Run one position (input embedding x [B, d]); return the logits [B, V] it predicts."""
        t = self.position
        if t >= self.max_length:
            raise RuntimeError(f"decoder is full ({self.max_length} positions)")
        self.position = t + 1
        if self.positions is not None:
            x = x + self.positions[t].to(x.dtype)
        for kind, wrapper, state in self.blocks:
            if kind == "ff":
                x = x + state(x[:, None])[:, 0]  # the library's own wrapper + feed-forward on one position
                continue
            h = wrapper.before(x)
            out = state.step(h, t) if kind == "self" else state.step(h)
            x = x + wrapper.after(out)
        hidden = self.prior.norm(x)
        if self.prior.tie_embedding:
            return F.linear(hidden, self.prior.inputs.token_embedding.weight)
        return self.prior.to_logits(hidden)

