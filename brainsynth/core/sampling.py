"""The autoregressive sampler: one step per token, with a key/value cache.

`sample` drives any `Prior` through its `TokenDecoder`: the logits of the next token are masked
at BOS, shaped by temperature / top-k / top-p, and a token is drawn (or the arg-max taken) for the
whole batch at once.

Classifier-free guidance (`guidance_scale`) runs one decoder over 2B sequences, the given values
for the first B and null values for the last B, and `GuidedDecoder` combines each step's two halves
into ``null + scale * (cond - null)``; the chosen tokens feed both halves. Any prior with a decoder
gets it, and a guided step costs one batched step of twice the rows, not two steps.

A prior's own cached decoder is the fast path (`brainsynth.library.cached_decoder.CachedDecoder`
is one, over exported `DecoderWeights`): one step costs one token's worth of work.
`RecomputingDecoder` is the generic fallback: it re-runs the prior on the whole prefix per token.
A prior declares which it has (`Prior.has_cached_decoder`); `sample` warns once per prior when it
samples through the fallback, with the cost (`uncached_cost`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from .errors import BrainsynthWarning, DataError, RecipeError
from .prior import null_values

if TYPE_CHECKING:
    from .prior import ConditioningValues, Prior, TokenDecoder





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


def check_guided_variables(prior: Prior, guided_variables: Sequence[str] | None) -> None:
    """Raise a RecipeError when `guided_variables` names a variable the prior is not conditioned on."""
    if guided_variables is None:
        return
    columns = list(getattr(prior.conditioning, "columns", None) or [])
    unknown = [name for name in guided_variables if name not in columns]
    if unknown or not guided_variables:
        raise RecipeError(
            f"sample.guidance_variables: {', '.join(map(repr, unknown)) or 'an empty list'}: name variables the prior "
            f"is conditioned on ({', '.join(columns) or 'none'})."
        )


def guided_values(
    prior: Prior,
    batch_size: int,
    conditioning: ConditioningValues | None,
    guidance_scale: float,
    guided_variables: Sequence[str] | None = None,
) -> tuple[ConditioningValues | None, int, bool]:
    """The values a decoder is built with, its number of rows, and whether the rows are doubled.

    A prior with null vectors given no values samples unconditionally (NaN for every variable);
    scale 0 is exactly that null branch, so it runs B rows, not 2B. Scale 1 is plain conditional
    sampling. Any other scale decodes 2B rows: the given values, then the same rows with every
    variable null (only those of `guided_variables`, when given), so guidance pushes toward exactly
    the variables that were given (and guided).
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
    check_guided_variables(prior, guided_variables)
    doubled = {}
    for column, value in conditioning.items():
        value = torch.as_tensor(value, device=device).reshape(-1)
        if not torch.is_floating_point(value):
            value = value.to(torch.float64)  # categorical codes: exact as floats, and NaN can mark the null rows
        guided = guided_variables is None or column in guided_variables
        doubled[column] = torch.cat([value, torch.full_like(value, float("nan")) if guided else value])
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
    guided_variables: Sequence[str] | None = None,
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
    apply to the combined logits. `guided_variables` narrows guidance to those variables: the
    second branch nulls only them and keeps the others' values, so the scale strengthens, say, the
    ventricular volume without sharpening every other condition (default: all given variables).
    A prior with null vectors also accepts values for only some variables (the rest null) or none
    at all (unconditional).

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
    values, rows, guided = guided_values(prior, batch_size, conditioning, guidance_scale, guided_variables)
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
