"""The ``original_xtransformer`` prior: the original BrainSynth ``XTransformer``, re-implemented.

Trained original checkpoints load into it unchanged and give the original's logits (bit-equal on
CPU in float32, tests/test_original_xtransformer.py). Its recipe keys are the original
``run_transformer.py`` flags (reference §1.5), except ``n_embd``/``n_layers``/``n_head``, which are
``dim``/``depth``/``heads``. The layers are x-transformers 0.25.4 as the original used them
(`original_xtransformer_layers`); the key/value-cached sampler is `original_xtransformer_decoder`.

Every ``run_transformer.py`` option of the xtransformer network is reproduced; each one is covered
by a golden configuration generated from the original (tools/original_golden/xtransformer_golden.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import (
    Conditioning,
    ConditioningValues,
    Prior,
    TokenDecoder,
    require_positive,
    sequence_length_of,
)

from .original_xtransformer_layers import (
    DIM_HEAD,
    AbsolutePositionalEmbedding,
    AbsoluteSpatialPositionalEmbedding,
    AttentionLayers,
    FixedSpatialPositionalEmbedding,
    RelativePositionBias,
    SpatialRelativePositionBias,
    spatial_position_ids,
)


class TokenEmbedding(nn.Module):
    """The token table under the original's name (``token_emb.emb``), Kaiming-normal initialised."""

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(num_tokens, dim)
        nn.init.kaiming_normal_(self.emb.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.emb(tokens)


class OriginalXTransformerPrior(Prior):
    """Decoder-only transformer exactly as the original BrainSynth built it from x-transformers 0.25.4.

    `position_emb`: ``rotary`` (rotary on q, k and v of self-attention), ``fixed`` (a learnt
    absolute embedding, as the original mapped it; only without rotary and T5 bias) or
    ``absolute`` (the original's default: no position embedding). `spatial_position_emb` adds a
    learnt (``absolute``) or sinusoidal (``fixed``) embedding of each grid coordinate of the held
    cell. `spatial_rel_pos_bias` is the learnt 3D relative-offset bias (`bucket_values` and
    `spatial_bias_max_dist` its iRPE bucketing); `rel_pos_bias` the T5 one (which wins if both
    are set, as in the original). Head width is 64, as in the original.
    """

    has_cached_decoder = True  # `OriginalXTransformerDecoder`: one token per step

    def __init__(
        self,
        dim: int = 256,
        depth: int = 10,
        heads: int = 8,
        emb_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        tie_embedding: bool = False,
        ff_glu: bool = False,
        use_rezero: bool = False,
        position_emb: Literal["rotary", "fixed", "absolute"] | None = "absolute",
        spatial_position_emb: Literal["absolute", "fixed"] | None = None,
        use_rmsnorm: bool = False,
        attn_talking_heads: bool = False,
        attn_gate_values: bool = False,
        attn_on_attn: bool = False,
        sandwich_coef: int | None = None,
        sandwich_norm: bool = False,
        rel_pos_bias: bool = False,
        spatial_rel_pos_bias: bool = False,
        bucket_values: bool = False,
        spatial_bias_max_dist: int = 50,
        use_qk_norm_attn: bool = False,
        residual_attn: bool = False,
        cross_residual_attn: bool = False,
        gate_residual: bool = False,
        *,
        num_tokens: int,
        max_seq_len: int | None = None,
        ordering: Ordering | None = None,
        conditioning: Conditioning | None = None,
    ) -> None:
        super().__init__()
        owner = "network (original_xtransformer)"
        require_positive(owner, dim=dim, depth=depth, heads=heads, spatial_bias_max_dist=spatial_bias_max_dist)
        if position_emb not in ("rotary", "fixed", "absolute", None):
            raise RecipeError(f"{owner}: position_emb must be 'rotary', 'fixed' or 'absolute', got {position_emb!r}.")
        if spatial_position_emb not in ("absolute", "fixed", None):
            raise RecipeError(f"{owner}: spatial_position_emb must be 'absolute', 'fixed' or null, got {spatial_position_emb!r}.")
        if sandwich_coef is not None and not 0 < sandwich_coef <= depth:
            raise RecipeError(f"{owner}: sandwich_coef must be in 1..depth ({depth}), got {sandwich_coef}.")
        if sandwich_norm and (residual_attn or cross_residual_attn):
            raise RecipeError(
                f"{owner}: sandwich_norm cannot be combined with residual_attn / cross_residual_attn (they switch the "
                f"stack to post-norm; the original refuses the combination too)."
            )
        if spatial_position_emb == "fixed" and dim % 2:
            raise RecipeError(f"{owner}: spatial_position_emb 'fixed' needs an even dim, got {dim}.")
        needs_grid = spatial_rel_pos_bias and not rel_pos_bias or spatial_position_emb is not None
        if needs_grid and ordering is None:
            raise RecipeError(f"{owner}: spatial position options need the ordering (the engine supplies it).")
        if spatial_rel_pos_bias and not rel_pos_bias and len(ordering.spatial_shape) != 3:
            raise RecipeError(f"{owner}: spatial_rel_pos_bias needs a 3D token grid (the original's is 3D only).")
        placement = conditioning.placement if conditioning is not None else "none"
        if placement in ("bos", "prepend", "context") and conditioning.dim != dim:
            raise RecipeError(
                f"{owner}: the conditioning makes {conditioning.dim}-wide vectors but dim is {dim}; the original "
                f"tiles or embeds conditioning at the model width, so they must match."
            )
        self.num_tokens = num_tokens
        self.sequence_length = sequence_length_of(ordering, max_seq_len, owner)
        self.conditioning = conditioning
        self.placement = placement
        self.prefix_length = conditioning.num_vectors if placement == "prepend" else 0
        self.dim, self.heads, self.dim_head = dim, heads, DIM_HEAD
        self.tie_embedding = tie_embedding
        self.position_emb = position_emb

        self.token_emb = TokenEmbedding(dim, num_tokens)
        # The original's table covers prod(grid) + 1 positions (+ the prepended ones).
        table_length = self.sequence_length + 1 + self.prefix_length
        rotary = position_emb == "rotary"
        self.pos_emb = (
            AbsolutePositionalEmbedding(dim, table_length) if position_emb == "fixed" and not rel_pos_bias else None
        )
        self.spatial_position_emb = nn.ModuleList()
        if spatial_position_emb is not None:
            coordinates = ordering.coordinates()
            kind = AbsoluteSpatialPositionalEmbedding if spatial_position_emb == "absolute" else FixedSpatialPositionalEmbedding
            for axis in range(coordinates.shape[1]):
                self.spatial_position_emb.append(kind(dim, coordinates[:, axis]))
        self.emb_dropout = nn.Dropout(emb_dropout)
        rel_pos: nn.Module | None = None
        if rel_pos_bias:
            rel_pos = RelativePositionBias(DIM_HEAD**0.5, heads)
        elif spatial_rel_pos_bias:
            ids, count = spatial_position_ids(
                ordering.spatial_shape, ordering.sequence_order.numpy(), bucket_values, spatial_bias_max_dist, self.prefix_length
            )
            rel_pos = SpatialRelativePositionBias(ids, count, heads, DIM_HEAD**0.5)
        self.attn_layers = AttentionLayers(
            dim,
            depth,
            heads,
            cross_attend=placement == "context",
            use_rmsnorm=use_rmsnorm,
            use_rezero=use_rezero,
            rotary=rotary,
            rel_pos=rel_pos,
            sandwich_coef=sandwich_coef,
            sandwich_norm=sandwich_norm,
            ff_glu=ff_glu,
            ff_dropout=ff_dropout,
            attn_dropout=attn_dropout,
            attn_gate_values=attn_gate_values,
            attn_on_attn=attn_on_attn,
            attn_talking_heads=attn_talking_heads,
            use_qk_norm_attn=use_qk_norm_attn,
            qk_norm_seq_len=table_length,
            residual_attn=residual_attn,
            cross_residual_attn=cross_residual_attn,
            gate_residual=gate_residual,
        )
        self.norm = nn.LayerNorm(dim)  # always a LayerNorm in the original, whatever use_rmsnorm says
        self.to_logits = None if tie_embedding else nn.Linear(dim, num_tokens)

    # -- training / scoring -------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, conditioning: ConditioningValues | None = None) -> torch.Tensor:
        if tokens.shape[1] > self.sequence_length:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens is longer than {self.sequence_length}")
        vectors = self.condition(conditioning)
        x = self.token_emb(tokens)
        for spatial in self.spatial_position_emb:
            x = x + spatial(x.shape[1]).to(x)
        if vectors is not None:  # parameter-free (tiled) conditioning returns its vectors on the CPU
            vectors = vectors.to(device=x.device, dtype=x.dtype)
        context = None
        if self.placement == "bos":
            x = torch.cat([vectors, x[:, 1:]], dim=1)
        elif self.placement == "prepend":
            x = torch.cat([vectors, x], dim=1)
        elif self.placement == "context":
            context = vectors
        if self.pos_emb is not None:
            x = x + self.pos_emb(x.shape[1])
        x = self.emb_dropout(x)
        x = self.attn_layers(x, context=context)
        x = self.norm(x)
        return self.logits(x[:, self.prefix_length :])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.to_logits is None:
            return hidden @ self.token_emb.emb.weight.t()
        return self.to_logits(hidden)

    # -- sampling -----------------------------------------------------------------------------
    def decoder(self, batch_size: int, conditioning: ConditioningValues | None = None) -> TokenDecoder:
        from .original_xtransformer_decoder import OriginalXTransformerDecoder

        return OriginalXTransformerDecoder(self, batch_size, conditioning)

    # -- original checkpoints -----------------------------------------------------------------
    def original_key_map(self) -> dict[str, str]:
        """Our state-dict key for each key an original checkpoint has that is named differently.

        Only the conditioning's categorical tables differ: the original's ``conditioning_emb.<k>``
        (k = the variable's position in its list) is our conditioning module's table for it.
        """
        mapping = {}
        embed = getattr(self.conditioning, "embed", None)
        if embed is not None and hasattr(embed, "embedders"):
            for k, embedder in enumerate(embed.embedders):
                if isinstance(embedder, nn.Embedding):
                    mapping[f"conditioning_emb.{k}.weight"] = f"conditioning.embed.embedders.{k}.weight"
        return mapping

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load an original checkpoint's network state (``module.`` already stripped), strictly.

        Raises CheckpointError naming the first missing, unexpected or mis-shaped key. The
        spatial bias ids (``rp_buckets``) and other saved buffers are taken from the checkpoint.
        """
        mapping = self.original_key_map()
        ours = self.state_dict()
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            target = mapping.get(key, key)
            if target not in ours:
                raise CheckpointError(
                    f"original checkpoint key '{key}' has no counterpart in this original_xtransformer: "
                    f"the recipe's options differ from the ones the checkpoint was trained with."
                )
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"original checkpoint key '{key}' holds a {type(value).__name__}, not a tensor.")
            if tuple(value.shape) != tuple(ours[target].shape):
                raise CheckpointError(
                    f"original checkpoint key '{key}' has shape {tuple(value.shape)}, this model's "
                    f"'{target}' has {tuple(ours[target].shape)}: check dim/depth/heads, the grid and the conditioning."
                )
            renamed[target] = value
        for key in ours:
            if key not in renamed:
                inverse = {v: k for k, v in mapping.items()}
                raise CheckpointError(
                    f"original checkpoint lacks '{inverse.get(key, key)}', which this original_xtransformer needs: "
                    f"the recipe's options differ from the ones the checkpoint was trained with."
                )
        self.load_state_dict(renamed, strict=True)
