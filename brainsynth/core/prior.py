"""What an autoregressive prior and its conditioning are, as far as the engine and sampler care.

Token layout (the original's, §4.1 of the reference): the vocabulary is the codebook size + 1;
the extra id, ``num_tokens - 1``, is BOS. A sequence of L grid tokens in model order is trained
as inputs ``[BOS, t0, ..., t(L-2)]`` against targets ``[t0, ..., t(L-1)]``: the output at
position p predicts token p, BOS is never a target, and the sampler never draws it.

Conditioning turns subject variables (a dict ``{column: tensor [B]}``; continuous values already
normalised floats, categorical values integer level codes) into vectors that a prior places in one
of four ways (`Conditioning.placement`): not at all, in place of the BOS embedding, prepended in
front of the sequence, or as the context of cross-attention.

A conditioning trained with ``dropout`` has learned null vectors (`Conditioning.has_nulls`): a
variable left out of the values, or NaN in one row (categorical codes then given as floats), takes
its null vector. That is partial conditioning, and with every variable NaN (`null_values`) the
unconditional branch that classifier-free guidance contrasts with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from .data import Variable
from .errors import DataError, RecipeError

if TYPE_CHECKING:
    from .ordering import Ordering

Placement = Literal["none", "bos", "prepend", "context"]
ConditioningValues = Mapping[str, torch.Tensor]


def as_variables(variables: Sequence[Variable | Mapping[str, Any]] | None) -> list[Variable]:
    """Recipe blocks (mappings, as validated) or `Variable`s -> `Variable`s, with clear errors."""
    result = []
    fields = {f.name for f in dataclasses.fields(Variable)}
    for i, item in enumerate(variables or ()):
        if isinstance(item, Variable):
            result.append(item)
            continue
        if not isinstance(item, Mapping) or "column" not in item:
            raise RecipeError(f"conditioning.variables[{i}]: expected a mapping with a 'column', got {item!r}.")
        unknown = set(item) - fields
        if unknown:
            raise RecipeError(
                f"conditioning.variables[{i}]: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(fields))}."
            )
        result.append(Variable(**item))
    columns = [v.column for v in result]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise RecipeError(f"conditioning.variables: column(s) {', '.join(duplicates)} listed more than once.")
    return result


class Conditioning(nn.Module):
    """Embeds subject variables for a prior; `placement` says where the prior puts the result.

    `forward(values)` returns [B, n, dim] (n = `num_vectors`), or None when there is nothing to
    condition on. The module is a sub-module of the prior, so it is trained and saved with it.
    """

    placement: ClassVar[Placement] = "none"

    def __init__(self, variables: Sequence[Variable | Mapping[str, Any]] = (), dim: int = 0) -> None:
        super().__init__()
        self.variables = as_variables(variables)
        self.dim = dim

    @property
    def columns(self) -> list[str]:
        return [v.column for v in self.variables]

    @property
    def num_vectors(self) -> int:
        """How many vectors `forward` returns per subject (0 when it returns None)."""
        return 0

    @property
    def has_nulls(self) -> bool:
        """True when trained with ``dropout``: learned null vectors stand in for variables not given."""
        embed = getattr(self, "embed", None)
        return getattr(embed, "null", None) is not None

    def forward(self, values: ConditioningValues | None) -> torch.Tensor | None:
        return None

    def batch_size(self, values: ConditioningValues | None) -> int | None:
        """The batch size the values imply (None without values); inconsistent sizes are an error."""
        if not values:
            return None
        sizes = {column: int(torch.as_tensor(value).reshape(-1).shape[0]) for column, value in values.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"conditioning values have different batch sizes: {sizes}.")
        return next(iter(sizes.values()))


class TokenDecoder(Protocol):
    """Incremental decoding state for one batch: what the sampler drives, one token per step."""

    def start(self) -> torch.Tensor:
        """Consume BOS (and any prefix); return logits [B, V] for the first token."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens [B]; return logits [B, V] for the next position."""


class Prior(nn.Module):
    """An autoregressive prior over token sequences read in an ordering.

    Subclasses set `num_tokens` (vocabulary incl. BOS), `sequence_length` (L), `conditioning`
    (a `Conditioning` or None) and implement `forward`. `decoder` defaults to re-running
    `forward` on the whole prefix for every token; a prior with an incremental decoder (a
    key/value cache, a recurrent state) overrides it and declares `has_cached_decoder`.
    """

    num_tokens: int
    sequence_length: int
    conditioning: Conditioning | None
    has_cached_decoder: bool = False
    """True when `decoder` does one token's work per step. Declared, not guessed (x-transformers'
    ``can_cache_kv``): without it sampling recomputes about (L + 1) / 2 times the positions a
    cached decoder would, and `sampling.sample` says so once. May be set per instance when a
    recipe option chooses the decoder."""

    @property
    def bos_token(self) -> int:
        return self.num_tokens - 1

    def forward(self, tokens: torch.Tensor, conditioning: ConditioningValues | None = None) -> torch.Tensor:
        """tokens [B, n] starting with BOS (n <= L) -> logits [B, n, num_tokens]; position p predicts token p."""
        raise NotImplementedError

    def decoder(self, batch_size: int, conditioning: ConditioningValues | None = None) -> TokenDecoder:
        """Decoding state for `batch_size` sequences; call in eval mode under inference_mode."""
        from .sampling import RecomputingDecoder

        return RecomputingDecoder(self, batch_size, conditioning)

    def condition(self, conditioning: ConditioningValues | None) -> torch.Tensor | None:
        """The conditioning vectors [B, n, dim] for these values, or None."""
        if self.conditioning is None or self.conditioning.placement == "none":
            return None
        if not conditioning:
            if self.conditioning.has_nulls:
                raise DataError(
                    f"this prior is conditioned on {', '.join(self.conditioning.columns)}; for unconditional "
                    "rows pass NaN values (brainsynth.core.prior.null_values)."
                )
            raise DataError(
                f"this prior is conditioned on {', '.join(self.conditioning.columns)}; pass their values "
                "(it was trained without conditioning.dropout, so it cannot sample unconditionally)."
            )
        return self.conditioning(conditioning)


def null_values(columns: Sequence[str], batch_size: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Values meaning "nothing given" for `batch_size` rows: NaN for every column (null vectors)."""
    return {column: torch.full((batch_size,), float("nan"), device=device) for column in columns}



def teacher_forcing_inputs(targets: torch.Tensor, bos: int) -> torch.Tensor:
    """[B, L] target tokens in model order -> [B, L] inputs: BOS followed by all targets but the last."""
    bos_column = torch.full_like(targets[:, :1], bos)
    return torch.cat([bos_column, targets[:, :-1]], dim=1)


def sequence_length_of(ordering: Ordering | None, max_seq_len: int | None, owner: str) -> int:
    """The number of grid tokens a prior models, from the ordering (preferred) or `max_seq_len`."""
    if ordering is not None:
        if max_seq_len is not None and max_seq_len != len(ordering):
            raise RecipeError(
                f"{owner}: max_seq_len {max_seq_len} disagrees with the ordering's {len(ordering)} tokens."
            )
        return len(ordering)
    if max_seq_len is None:
        raise RecipeError(f"{owner}: the engine must supply the ordering or max_seq_len.")
    return int(max_seq_len)


def require_positive(owner: str, **sizes: int) -> None:
    """A RecipeError naming the first of `sizes` (recipe key -> value) that is not positive."""
    for name, value in sizes.items():
        if value < 1:
            raise RecipeError(f"{owner}: {name} must be positive, got {value}.")
