"""The autoregressive sampler: one step per token, with a key/value cache.

`sample` drives any `Prior` through its `TokenDecoder`: the logits of the next token are masked
at BOS, shaped by temperature / top-k / top-p, and a token is drawn (or the arg-max taken) for the
whole batch at once.

Classifier-free guidance (`guidance_scale`) runs one decoder over 2B sequences, the given values
for the first B and null values for the last B, and `GuidedDecoder` combines each step's two halves
into ``null + scale * (cond - null)``; the chosen tokens feed both halves. Any prior with a decoder
gets it, and a guided step costs one batched step of twice the rows, not two steps.

`CachedDecoder` is the fast path. A prior exports its weights as a `DecoderWeights` (a pre-norm
decoder: self-attention, optional cross-attention, feed-forward), and one step then costs one
token's worth of work: the new token's keys/values are written into preallocated buffers, its
query attends to them with SDPA, cross-attention keys/values of the conditioning are computed
once per batch, the additive attention bias (a spatial relative position bias) is a row slice of
a matrix built once, and rotary embeddings are one small matmul with a precomputed rotation.
`RecomputingDecoder` is the generic fallback: it re-runs the prior on the whole prefix per token.
A prior declares which it has (`Prior.has_cached_decoder`); `sample` warns once per prior when it
samples through the fallback, with the cost (`uncached_cost`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from .errors import BrainsynthWarning, DataError, RecipeError
from .prior import null_values

if TYPE_CHECKING:
    from .prior import ConditioningValues, Prior, TokenDecoder


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


class RecomputingDecoder:
    """Decoding without a cache: the prior re-reads the whole prefix for every token (O(L^2))."""

    def __init__(self, prior: Prior, batch_size: int, conditioning: ConditioningValues | None = None) -> None:
        self.prior = prior
        self.conditioning = conditioning
        device = _device_of(prior)
        self.tokens = torch.full((batch_size, 1), prior.bos_token, dtype=torch.long, device=device)

    def start(self) -> torch.Tensor:
        return self.prior(self.tokens, self.conditioning)[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens = torch.cat([self.tokens, tokens[:, None]], dim=1)
        return self.prior(self.tokens, self.conditioning)[:, -1]


def uncached_cost(length: int) -> str:
    """The work of recomputing sampling against a cached decoder, for `length` tokens.

    Derived, not timed: drawing token i re-runs the prior on i + 1 positions (BOS and the i tokens
    so far), L(L + 1)/2 positions in all, where a cached decoder computes one position per token,
    L in all; the ratio is (L + 1)/2. It counts positions, not seconds: a prefix is computed in
    parallel, so wall time grows less (measured on one network, `performer` at 1400 tokens on
    CPU: 92x, README "Sampling speed of the paper's priors").
    """
    positions = length * (length + 1) // 2
    return (
        f"{positions:,} positions computed for {length:,} tokens instead of {length:,} "
        f"(about {(length + 1) / 2:,.0f}x as many as a cached decoder computes)"
    )


_warned: weakref.WeakSet = weakref.WeakSet()


def warn_if_uncached(prior: Prior, decoder: object, length: int) -> None:
    """Warn once per prior that samples through `RecomputingDecoder` or declares no cached decoder."""
    declared = bool(getattr(prior, "has_cached_decoder", False))
    if declared and not isinstance(decoder, RecomputingDecoder):
        return
    if prior in _warned:
        return
    _warned.add(prior)
    name = type(prior).__name__
    why = (
        f"{name} declares has_cached_decoder but its decoder() re-runs the whole prefix"
        if declared
        else f"{name} has no cached decoder (Prior.has_cached_decoder is False)"
    )
    warnings.warn(
        f"{why}: sampling re-runs the network on the whole prefix for every token, {uncached_cost(length)}.",
        BrainsynthWarning,
        stacklevel=3,
    )


class GuidedDecoder:
    """Classifier-free guidance over a decoder of 2B rows: conditioned first, null (unconditional) last.

    Each step returns ``null + scale * (cond - null)`` in float32, [B, V], and feeds the chosen
    tokens to both halves, so both branches advance in one batched (cached) step.
    """

    def __init__(self, decoder: TokenDecoder, scale: float) -> None:
        self.decoder = decoder
        self.scale = float(scale)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        conditioned, null = logits.float().chunk(2, dim=0)
        return null + self.scale * (conditioned - null)

    def start(self) -> torch.Tensor:
        return self.combine(self.decoder.start())

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.combine(self.decoder.step(torch.cat([tokens, tokens])))


def check_guidance(prior: Prior, guidance_scale: float) -> None:
    """Raise a RecipeError when `guidance_scale` is not finite or the prior has no null branch."""
    if not math.isfinite(guidance_scale):
        raise RecipeError(f"sample.guidance_scale must be a finite number, got {guidance_scale}.")
    if guidance_scale == 1:
        return
    conditioning = prior.conditioning
    if conditioning is None or conditioning.placement == "none":
        raise RecipeError(
            f"sample.guidance_scale {guidance_scale}: this prior is not conditioned, so there is nothing to guide; use 1."
        )
    if not getattr(conditioning, "has_nulls", False):
        raise RecipeError(
            f"sample.guidance_scale {guidance_scale}: this prior was trained without conditioning.dropout (no null "
            "vectors), so it has no unconditional branch to guide against; use 1, or retrain with conditioning.dropout."
        )


def guided_values(
    prior: Prior, batch_size: int, conditioning: ConditioningValues | None, guidance_scale: float
) -> tuple[ConditioningValues | None, int, bool]:
    """The values a decoder is built with, its number of rows, and whether the rows are doubled.

    A prior with null vectors given no values samples unconditionally (NaN for every variable);
    scale 0 is exactly that null branch, so it runs B rows, not 2B. Scale 1 is plain conditional
    sampling. Any other scale decodes 2B rows: the given values, then the same rows with every
    variable null, so guidance pushes toward exactly the variables that were given.
    """
    conditioning_module = prior.conditioning
    nulls = (
        conditioning_module is not None
        and conditioning_module.placement != "none"
        and getattr(conditioning_module, "has_nulls", False)
    )
    if not nulls:
        return conditioning, batch_size, False
    device = _device_of(prior)
    if not conditioning or guidance_scale == 0:
        return null_values(prior.conditioning.columns, batch_size, device), batch_size, False
    if guidance_scale == 1:
        return conditioning, batch_size, False
    doubled = {}
    for column, value in conditioning.items():
        value = torch.as_tensor(value, device=device).reshape(-1)
        if not torch.is_floating_point(value):
            value = value.to(torch.float64)  # categorical codes: exact as floats, and NaN can mark the null rows
        doubled[column] = torch.cat([value, torch.full_like(value, float("nan"))])
    return doubled, 2 * batch_size, True


# --------------------------------------------------------------------------------------------
# Choosing tokens
# --------------------------------------------------------------------------------------------
def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a RecipeError naming the ``sample`` key that is out of range."""
    if not temperature > 0:
        raise RecipeError(f"sample.temperature must be > 0, got {temperature}; use greedy decoding for 0.")
    if top_k is not None and top_k < 1:
        raise RecipeError(f"sample.top_k must be >= 1 (or null), got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise RecipeError(f"sample.top_p must be in (0, 1] (or null), got {top_p}.")


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; removed entries become -inf."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor,
    bos: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, V] logits -> [B] tokens; BOS is masked first, so it is never chosen."""
    logits = logits.float()
    logits[:, bos] = float("-inf")
    if greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def sample(
    prior: Prior,
    batch_size: int | None = None,
    conditioning: ConditioningValues | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    guidance_scale: float = 1.0,
    use_cache: bool = True,
    length: int | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Draw token sequences [B, length] in model order (revert them with the ordering).

    `batch_size` defaults to the size of the conditioning values. `length` (default: the prior's
    sequence length) allows a prefix for tests and benchmarks. `use_cache=False` forces the
    recomputing decoder. `progress(i)` is called after each token.

    `guidance_scale` (classifier-free guidance; the prior needs null vectors, i.e. training with
    ``conditioning.dropout``): 1 samples from the conditional model, 0 from the unconditional one
    (null vectors), and s > 1 from logits ``null + s * (cond - null)``, both branches decoded in
    one batch of 2B rows (see `GuidedDecoder`). Temperature, top-k/p, greedy and the generator
    apply to the combined logits. A prior with null vectors also accepts values for only some
    variables (the rest null) or none at all (unconditional).

    A prior without a cached decoder (`Prior.has_cached_decoder` False) samples all the same, and
    the first call for it warns (`BrainsynthWarning`) with the cost; `use_cache=False` asks for
    the recomputing decoder and does not warn.

    `threads`: torch intra-op threads while decoding (restored afterwards). By default, decoding
    on CPU with at most `SMALL_BATCH` sequences uses one thread: each step is a handful of
    matrix-vector products too small to split, and splitting them made steps 4-8x slower on a
    busy 2-core machine (benchmarks/sampling.py); otherwise torch's setting is kept.
    """
    check_sampling_options(temperature, top_k, top_p)
    check_guidance(prior, guidance_scale)
    implied = prior.conditioning.batch_size(conditioning) if prior.conditioning is not None else None
    if batch_size is None:
        batch_size = implied if implied is not None else 1
    elif implied is not None and implied != batch_size:
        raise DataError(f"batch_size {batch_size} differs from the {implied} conditioning values given.")
    length = prior.sequence_length if length is None else length
    if not 1 <= length <= prior.sequence_length:
        raise ValueError(f"length must be in 1..{prior.sequence_length}, got {length}")
    bos = prior.bos_token
    values, rows, guided = guided_values(prior, batch_size, conditioning, guidance_scale)
    if threads is None and rows <= SMALL_BATCH and _device_of(prior).type == "cpu":
        threads = 1
    was_training, previous_threads = prior.training, torch.get_num_threads()
    prior.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            decoder = prior.decoder(rows, values) if use_cache else RecomputingDecoder(prior, rows, values)
            if use_cache and length > 1:
                warn_if_uncached(prior, decoder, length)
            if guided:
                decoder = GuidedDecoder(decoder, guidance_scale)
            logits = decoder.start()
            tokens = torch.empty(batch_size, length, dtype=torch.long, device=logits.device)
            for i in range(length):
                chosen = choose_tokens(
                    logits, bos, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
                )
                tokens[:, i] = chosen
                if i + 1 < length:
                    logits = decoder.step(chosen)
                if progress is not None:
                    progress(i)
    finally:
        prior.train(was_training)
        torch.set_num_threads(previous_threads)
    return tokens


SMALL_BATCH = 8
"""Up to this many sequences, CPU decoding runs on one intra-op thread by default (see `sample`)."""


def _device_of(prior: Prior) -> torch.device:
    for tensor in prior.parameters():
        return tensor.device
    return torch.device("cpu")


def stack_conditioning(rows: Sequence[dict[str, float]]) -> dict[str, torch.Tensor]:
    """A list of per-subject value dicts -> one batch ``{column: tensor [B]}``."""
    if not rows:
        return {}
    columns = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != columns:
            raise DataError(f"conditioning row {i} has columns {list(row)}, expected {columns}.")
    return {column: torch.tensor([row[column] for row in rows]) for column in columns}
