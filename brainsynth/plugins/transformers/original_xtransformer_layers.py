"""The layers of the original BrainSynth ``XTransformer``: x-transformers 0.25.4 as the original used it.

Written from the reference (§4.2-§4.4) and from reading the original, in plain torch. Module and
attribute names follow the original's, so an original checkpoint's state-dict keys load unchanged
(``attn_layers.layers.<i>.<0: norms | 1: block | 2: residual>...``). The arithmetic follows the
original's operation order (einsum scores, ``bias + dim_head ** 0.5`` added to them, a max-subtracted
softmax, rotary embedding of q, k and v on the first max(dim_head / 2, 32) dims), so that the
outputs match the original's bit for bit on CPU in float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DIM_HEAD = 64
"""Both of the original's wrappers fix the head width at x-transformers' default."""


# --------------------------------------------------------------------------------------------
# Norms, residuals, feed-forward
# --------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / max(||x|| * dim^-1/2, eps) * g, eps 1e-8 (x-transformers 0.25.4; not torch's rms_norm)."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Residual(nn.Module):
    """The plain residual sum (parameter-free, like 0.25.4's `Residual` without scaling)."""

    def forward(self, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return out + residual


class GRUGating(nn.Module):
    """GRU-gated residual: the branch output is the GRU input, the residual its hidden state."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRUCell(dim, dim)

    def forward(self, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        gated = self.gru(out.reshape(-1, out.shape[-1]), residual.reshape(-1, residual.shape[-1]))
        return gated.reshape_as(out)


class Rezero(nn.Module):
    """ReZero branch: the block's output times a learnt scalar `g` (initialised to 0)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, **kwargs):
        out = self.fn(x, **kwargs)
        if isinstance(out, tuple):
            return (out[0] * self.g, *out[1:])
        return out * self.g


class GLU(nn.Module):
    """value * gelu(gate) from one projection to twice the width (x-transformers' feed-forward GLU)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """Linear(d, 4d) -> GELU (or GLU) -> Dropout -> Linear(4d, d); `net` indices as in 0.25.4."""

    def __init__(self, dim: int, glu: bool = False, dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        project_in = GLU(dim, inner) if glu else nn.Sequential(nn.Linear(dim, inner), nn.GELU())
        self.glu = glu
        self.net = nn.Sequential(project_in, nn.Identity(), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def up(self) -> nn.Linear:
        return self.net[0].proj if self.glu else self.net[0][0]


# --------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------
def inverse_frequencies(dim: int) -> torch.Tensor:
    """1 / 10000^(2i/dim), the frequencies of the rotary and sinusoidal embeddings (float32)."""
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


class RotaryEmbedding(nn.Module):
    """Rotary angles [1, 1, n, r] (frequencies repeated: rotate-half convention); `inv_freq` is saved."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(dim))

    def forward(self, length: int, device: torch.device) -> torch.Tensor:
        t = torch.arange(length, device=device).type_as(self.inv_freq)
        freqs = torch.einsum("i , j -> i j", t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)[None, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first r = angles.shape[-1] dims of t [B, h, n, dh] by the last n angles."""
    r = angles.shape[-1]
    angles = angles[:, :, -t.shape[-2] :]
    rotated, rest = t[..., :r], t[..., r:]
    rotated = (rotated * angles.cos()) + (rotate_half(rotated) * angles.sin())
    return torch.cat((rotated, rest), dim=-1)


class AbsolutePositionalEmbedding(nn.Module):
    """Learnt absolute embedding scaled by dim^-1/2: what the original's ``position_emb='fixed'`` gives."""

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, length: int) -> torch.Tensor:
        positions = torch.arange(length, device=self.emb.weight.device)
        return self.emb(positions)[None] * self.scale


class AbsoluteSpatialPositionalEmbedding(nn.Module):
    """Learnt embedding of one grid coordinate of the cell each token position holds (BOS: zero).

    `spatial_indices_sequence` [L - 1] is the coordinate of the cell held at token positions
    1..L-1 (the cell predicted one position earlier); the table has L - 1 rows as in the original.
    """

    def __init__(self, dim: int, coordinate_sequence: torch.Tensor) -> None:
        super().__init__()
        held = coordinate_sequence[:-1].long().clone()
        self.register_buffer("spatial_indices_sequence", held)
        self.emb = nn.Embedding(len(held), dim)

    def forward(self, length: int) -> torch.Tensor:
        """[1, length, dim] for token positions 0..length-1."""
        table = self.emb(self.spatial_indices_sequence)[None, : length - 1]
        return F.pad(table, (0, 0, 1, 0, 0, 0))


class FixedSpatialPositionalEmbedding(nn.Module):
    """Sinusoidal embedding of one grid coordinate of the held cell; the table `emb` is saved."""

    def __init__(self, dim: int, coordinate_sequence: torch.Tensor) -> None:
        super().__init__()
        coordinates = coordinate_sequence.long()
        inv_freq = inverse_frequencies(dim)
        positions = torch.arange(0, int(coordinates.max()) + 1, dtype=torch.float)
        angles = torch.einsum("i,j->ij", positions, inv_freq)[coordinates]
        self.register_buffer("emb", torch.cat((angles.sin(), angles.cos()), dim=-1)[:-1])

    def forward(self, length: int) -> torch.Tensor:
        return F.pad(self.emb[None, : length - 1], (0, 0, 1, 0, 0, 0))


# --------------------------------------------------------------------------------------------
# Relative position biases
# --------------------------------------------------------------------------------------------
def piecewise_index(offsets: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """iRPE bucketing, in float32 as the original computed it: |x| <= alpha kept, beyond log-compressed."""
    magnitude = offsets.abs()
    far = magnitude > alpha
    far_offsets = offsets[far]
    compressed = torch.sign(far_offsets) * (
        alpha + torch.log(magnitude[far] / alpha) / math.log(gamma / alpha) * (beta - alpha)
    ).round().clip(max=beta)
    result = offsets.clone()
    result[far] = compressed.to(result.dtype)
    return result


def spatial_position_ids(
    grid: tuple[int, int, int], order: np.ndarray, bucket_values: bool, beta: int, prefix: int
) -> tuple[torch.Tensor, int]:
    """The original's [T, T] int32 offset ids between sequence positions, and its number of ids.

    ids[p, q] encodes coord(order[q]) - coord(order[p]) (the cells predicted at p and q), each
    component shifted to be non-negative, as Δi + Δj m + Δk m² with m the largest component
    range. The number of ids is the largest id (the original's count; its table has one row
    more). With `prefix` conditioning positions, their rows and columns hold that count as id and
    the count grows by one (reference §4.4).
    """
    cells = torch.from_numpy(np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1)).int()
    offsets = cells[None, :, :] - cells[:, None, :]  # [a, b, 3] = coord(b) - coord(a)
    components = []
    for axis in range(3):
        component = offsets[..., axis]
        if bucket_values:
            component = piecewise_index(component, beta / 2, beta, beta * 4) + beta
        components.append(component - component.min())
    m = max(int(c.max()) for c in components) + 1
    pid = components[0] + components[1] * m + components[2] * m**2
    order_t = torch.as_tensor(np.asarray(order), dtype=torch.long)
    ids = pid[order_t][:, order_t]
    count = int(pid.max())
    if prefix:
        padded = torch.full((prefix + len(order_t),) * 2, count, dtype=ids.dtype)
        padded[prefix:, prefix:] = ids
        ids, count = padded, count + 1
    return ids.to(torch.int32), count


class SpatialRelativePositionBias(nn.Module):
    """Learnt scalar per head per 3D offset id, added with the constant dim_head^1/2 to the scores.

    `rp_buckets` (persistent) holds the ids; an imported checkpoint's ids replace the computed ones.
    """

    def __init__(self, ids: torch.Tensor, num_ids: int, heads: int, scale: float) -> None:
        super().__init__()
        self.relative_attention_bias = nn.Embedding(num_ids + 1, heads)
        self.scale = scale
        self.register_buffer("rp_buckets", ids)

    def bias(self, rows: slice, columns: slice) -> torch.Tensor:
        """[1, h, i, j] bias (without the constant) for the given query rows and key columns."""
        return self.relative_attention_bias(self.rp_buckets[rows, columns].long()).permute(2, 0, 1)[None]

    def forward(self, dots: torch.Tensor) -> torch.Tensor:
        i, j = dots.shape[-2:]
        return dots + (self.bias(slice(0, i), slice(0, j)) + self.scale)


class RelativePositionBias(nn.Module):
    """T5 bucketed 1D relative bias (causal: 32 buckets, max distance 128), times dim_head^1/2."""

    def __init__(self, scale: float, heads: int, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.scale = scale
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def buckets(self, i: int, j: int, device: torch.device) -> torch.Tensor:
        q_pos = torch.arange(j - i, j, dtype=torch.long, device=device)
        k_pos = torch.arange(j, dtype=torch.long, device=device)
        n = torch.clamp(q_pos[:, None] - k_pos[None, :], min=0)
        max_exact = self.num_buckets // 2
        large = max_exact + (
            torch.log(n.float() / max_exact) / math.log(self.max_distance / max_exact) * (self.num_buckets - max_exact)
        ).long()
        large = torch.min(large, torch.full_like(large, self.num_buckets - 1))
        return torch.where(n < max_exact, n, large)

    def bias(self, rows: slice, columns: slice, device: torch.device) -> torch.Tensor:
        stop = columns.stop
        buckets = self.buckets(stop, stop, device)[rows, columns]
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def forward(self, dots: torch.Tensor) -> torch.Tensor:
        i, j = dots.shape[-2:]
        buckets = self.buckets(i, j, dots.device)
        return dots + (self.relative_attention_bias(buckets).permute(2, 0, 1)[None] * self.scale)


# --------------------------------------------------------------------------------------------
# Attention and the layer stack
# --------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """0.25.4 attention: bias-free q/k/v, output projection with bias, optional sigmoid value gate.

    The gate is Linear(dim, h*dh) with weight 0 and bias 1 at initialisation, applied to the
    aggregated values. `on_attn` ends the output in Linear(h*dh, 2 dim) -> GLU. `talking_heads`
    mixes the heads' scores before and their weights after the softmax (1x1 convolutions).
    `qk_norm` l2-normalises q and k and scales the scores by 1 / exp(learnt per-head `scale`).
    `forward` also returns the pre-softmax scores (residual attention passes them on).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        causal: bool,
        dropout: float = 0.0,
        gate_values: bool = False,
        on_attn: bool = False,
        talking_heads: bool = False,
        qk_norm: bool = False,
        qk_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        inner = DIM_HEAD * heads
        self.heads = heads
        self.causal = causal
        self.scale: float | nn.Parameter = DIM_HEAD**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_v_gate = None
        if gate_values:
            self.to_v_gate = nn.Linear(dim, inner)
            nn.init.constant_(self.to_v_gate.weight, 0)
            nn.init.constant_(self.to_v_gate.bias, 1)
        self.qk_norm = qk_norm
        if qk_norm:
            self.scale = nn.Parameter(torch.ones(1, heads, 1, 1) * (-3.0 if qk_scale_init is None else qk_scale_init))
        self.talking_heads = talking_heads
        if talking_heads:
            self.pre_softmax_talking_heads = nn.Conv2d(heads, heads, 1, bias=False)
            self.post_softmax_talking_heads = nn.Conv2d(heads, heads, 1, bias=False)
        self.on_attn = on_attn
        self.to_out = nn.Sequential(nn.Linear(inner, dim * 2), nn.GLU()) if on_attn else nn.Linear(inner, dim)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def score_scale(self) -> float | torch.Tensor:
        """The factor of q.k: dim_head^-1/2, or with qk_norm 1 / exp(scale) per head ([1, h, 1, 1])."""
        if self.qk_norm:
            return 1 / (self.scale.exp().clamp(min=1e-2))
        return self.scale

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rel_pos: nn.Module | None = None,
        rotary: torch.Tensor | None = None,
        prev_attn: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kv_input = x if context is None else context
        q, k, v = (self.split_heads(t) for t in (self.to_q(x), self.to_k(kv_input), self.to_v(kv_input)))
        if rotary is not None and context is None:
            q, k, v = (apply_rotary(t, rotary) for t in (q, k, v))
        if self.qk_norm:
            q, k = F.normalize(q, p=2, dim=-1), F.normalize(k, p=2, dim=-1)
        dots = torch.einsum("b h i d, b h j d -> b h i j", q, k) * self.score_scale()
        mask_value = -torch.finfo(dots.dtype).max
        if prev_attn is not None:
            dots = dots + prev_attn
        pre_softmax = dots
        if self.talking_heads:
            dots = self.pre_softmax_talking_heads(dots)
        if rel_pos is not None:
            dots = rel_pos(dots)
        if self.causal:
            i, j = dots.shape[-2:]
            r = torch.arange(i, device=dots.device)
            future = F.pad(r[:, None] < r[None, :], (j - i, 0), value=False)
            dots = dots.masked_fill(future, mask_value)
        dots = dots - dots.amax(dim=-1, keepdim=True).detach()
        attn = self.dropout(F.softmax(dots, dim=-1))
        if self.talking_heads:
            attn = self.post_softmax_talking_heads(attn)
        out = torch.einsum("b h i j, b h j d -> b h i d", attn, v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        if self.to_v_gate is not None:
            out = out * self.to_v_gate(x).sigmoid()
        return self.to_out(out), pre_softmax


class AttentionLayers(nn.Module):
    """The causal stack: blocks ('a', 'f') or ('a', 'c', 'f'), norms, rotary, relative bias.

    `layers[i]` = ModuleList([norms, block, residual]) as in 0.25.4, norms = (pre-branch,
    post-branch, post-main). Pre-norm by default; with residual attention post-norm (a norm after
    every residual sum but the last), passing each layer's pre-softmax scores to the next layer of
    its kind. With qk-norm, attention layers have a post-branch norm instead of a pre-branch one.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        cross_attend: bool,
        use_rmsnorm: bool = False,
        use_rezero: bool = False,
        rotary: bool = False,
        rel_pos: nn.Module | None = None,
        sandwich_coef: int | None = None,
        sandwich_norm: bool = False,
        ff_glu: bool = False,
        ff_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        attn_gate_values: bool = False,
        attn_on_attn: bool = False,
        attn_talking_heads: bool = False,
        use_qk_norm_attn: bool = False,
        qk_norm_seq_len: int | None = None,
        residual_attn: bool = False,
        cross_residual_attn: bool = False,
        gate_residual: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.rotary_pos_emb = RotaryEmbedding(max(DIM_HEAD // 2, 32)) if rotary else None
        self.rel_pos = rel_pos
        self.pre_norm = not (residual_attn or cross_residual_attn)
        self.residual_attn = residual_attn
        self.cross_residual_attn = cross_residual_attn
        block = ("a", "c", "f") if cross_attend else ("a", "f")
        if sandwich_coef:
            self.layer_types = ("a",) * sandwich_coef + block * (depth - sandwich_coef) + ("f",) * sandwich_coef
        else:
            self.layer_types = block * depth
        qk_scale_init = (
            -math.log(math.log2(qk_norm_seq_len**2 - qk_norm_seq_len)) if use_qk_norm_attn and qk_norm_seq_len else None
        )

        def norm() -> nn.Module:
            if use_rezero:
                return nn.Identity()
            return RMSNorm(dim) if use_rmsnorm else nn.LayerNorm(dim)

        self.layers = nn.ModuleList()
        for index, layer_type in enumerate(self.layer_types):
            is_last = index == len(self.layer_types) - 1
            if layer_type == "f":
                layer: nn.Module = FeedForward(dim, glu=ff_glu, dropout=ff_dropout)
            else:
                layer = Attention(
                    dim,
                    heads,
                    causal=layer_type == "a",
                    dropout=attn_dropout,
                    gate_values=attn_gate_values,
                    on_attn=attn_on_attn,
                    talking_heads=attn_talking_heads,
                    qk_norm=use_qk_norm_attn,
                    qk_scale_init=qk_scale_init,
                )
            if use_rezero:
                layer = Rezero(layer)
            uses_qk_norm = use_qk_norm_attn and layer_type in ("a", "c")
            norms = nn.ModuleList(
                [
                    norm() if self.pre_norm and not uses_qk_norm else None,
                    norm() if sandwich_norm or uses_qk_norm else None,
                    norm() if not self.pre_norm and not is_last else None,
                ]
            )
            residual = GRUGating(dim) if gate_residual else Residual()
            self.layers.append(nn.ModuleList([norms, layer, residual]))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        rotary = self.rotary_pos_emb(x.shape[1], x.device) if self.rotary_pos_emb is not None else None
        prev_attn = prev_cross_attn = None
        for layer_type, (norms, block, residual_fn) in zip(self.layer_types, self.layers):
            pre_norm, post_norm, post_main_norm = norms
            residual = x
            if pre_norm is not None:
                x = pre_norm(x)
            if layer_type == "a":
                out, scores = block(x, rel_pos=self.rel_pos, rotary=rotary, prev_attn=prev_attn)
                if self.residual_attn:
                    prev_attn = scores
            elif layer_type == "c":
                out, scores = block(x, context=context, prev_attn=prev_cross_attn)
                if self.cross_residual_attn:
                    prev_cross_attn = scores
            else:
                out = block(x)
            if post_norm is not None:
                out = post_norm(out)
            x = residual_fn(out, residual)
            if post_main_norm is not None:
                x = post_main_norm(x)
        return x
