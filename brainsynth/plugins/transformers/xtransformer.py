"""The `xtransformer` prior: an x-transformers `Decoder`, with the original's spatial bias.

The layers are x-transformers' public `Decoder` (pre-norm, causal), built with its own keyword
vocabulary; the 3D spatial relative position bias rides on the public ``attn_bias`` argument of
`Decoder.forward`. Token embedding, conditioning placement, position embeddings and the output
head are ours (`SequenceInput`), so every conditioning type works the same way.

Sampling does not go through x-transformers: `decoder` exports the weights into the engine's lean
`DecoderWeights` and the `CachedDecoder` runs one token per step. A test checks that the export
reproduces the x-transformers forward for every option this component offers; options outside
that list are not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import RecipeError
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, ConditioningValues, Prior, require_positive, sequence_length_of
from brainsynth.library.cached_decoder import AttentionWeights, CachedDecoder, DecoderWeights, FeedForwardWeights
from brainsynth.core.schema import Fraction, PositiveInt

from .sequence_input import SequenceInput
from .spatial_bias import SpatialRelativeBias


class XTransformerPrior(Prior):
    """Decoder-only transformer on x-transformers (rotary, RMSNorm, gated values, GLU, qk-norm, ...).

    Keyword names follow x-transformers (`attn_dim_head`, `use_rmsnorm`, `attn_gate_values`,
    `ff_glu`, `attn_qk_norm`, `sandwich_norm`, `rotary_pos_emb`, `rotary_emb_dim`). `use_abs_pos_emb`
    adds a learned absolute position embedding; `spatial_pos_emb` a learned embedding of the grid
    coordinates of each position's cell; `spatial_rel_pos_bias` the original's learned 3D relative
    offset bias (`spatial_bias_max_distance` compresses far offsets, iRPE style).
    """

    has_cached_decoder = True  # `CachedDecoder`: one token per step

    def __init__(
        self,
        dim: PositiveInt = 512,
        depth: PositiveInt = 8,
        heads: PositiveInt = 8,
        attn_dim_head: PositiveInt = 64,
        ff_mult: PositiveInt = 4,
        emb_dropout: Fraction = 0.0,
        attn_dropout: Fraction = 0.0,
        ff_dropout: Fraction = 0.0,
        rotary_pos_emb: bool = True,
        rotary_emb_dim: PositiveInt | None = None,
        use_abs_pos_emb: bool = False,
        spatial_pos_emb: bool = False,
        spatial_rel_pos_bias: bool = False,
        spatial_bias_max_distance: PositiveInt | None = None,
        use_rmsnorm: bool = False,
        attn_gate_values: bool = False,
        ff_glu: bool = False,
        attn_qk_norm: bool = False,
        sandwich_norm: bool = False,
        tie_embedding: bool = False,
        attn_flash: bool = True,
        *,
        num_tokens: int,
        max_seq_len: int | None = None,
        ordering: Ordering | None = None,
        conditioning: Conditioning | None = None,
    ) -> None:
        super().__init__()
        owner = "network (xtransformer)"
        require_positive(owner, dim=dim, depth=depth, heads=heads, attn_dim_head=attn_dim_head)
        if rotary_pos_emb and (rotary_emb_dim or attn_dim_head // 2) % 2:
            raise RecipeError(f"{owner}: rotary_emb_dim must be even, got {rotary_emb_dim or attn_dim_head // 2}.")
        if rotary_emb_dim is not None and rotary_emb_dim > attn_dim_head:
            raise RecipeError(f"{owner}: rotary_emb_dim {rotary_emb_dim} exceeds attn_dim_head {attn_dim_head}.")
        if (spatial_rel_pos_bias or spatial_pos_emb) and ordering is None:
            raise RecipeError(f"{owner}: spatial position options need the ordering (the engine supplies it).")
        self.num_tokens = num_tokens
        self.sequence_length = sequence_length_of(ordering, max_seq_len, owner)
        self.conditioning = conditioning
        self.heads, self.dim_head = heads, attn_dim_head
        self.tie_embedding = tie_embedding
        coordinates = ordering.coordinates() if ordering is not None else None
        self.inputs = SequenceInput(
            num_tokens,
            dim,
            self.sequence_length,
            conditioning,
            positions="absolute" if use_abs_pos_emb else "none",
            spatial_coordinates=coordinates if spatial_pos_emb else None,
            owner=owner,
        )
        self.emb_dropout = nn.Dropout(emb_dropout)
        cross = self.inputs.placement == "context"
        options = dict(
            dim=dim,
            depth=depth,
            heads=heads,
            attn_dim_head=attn_dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            rotary_pos_emb=rotary_pos_emb,
            use_rmsnorm=use_rmsnorm,
            attn_gate_values=attn_gate_values,
            ff_glu=ff_glu,
            attn_qk_norm=attn_qk_norm,
            sandwich_norm=sandwich_norm,
            attn_flash=attn_flash,
            cross_attend=cross,
            verbose=False,
        )
        if rotary_pos_emb and rotary_emb_dim is not None:
            options["rotary_emb_dim"] = rotary_emb_dim
        if cross:
            options["cross_attn_dim_context"] = conditioning.dim
        from x_transformers import Decoder  # imported when a prior is built, not when one is validated

        self.decoder_layers = Decoder(**options)
        self.spatial_bias = (
            SpatialRelativeBias(coordinates, heads, self.inputs.prefix_length, spatial_bias_max_distance)
            if spatial_rel_pos_bias
            else None
        )
        self.to_logits = None if tie_embedding else nn.Linear(dim, num_tokens, bias=False)

    # -- training / scoring -------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, conditioning: ConditioningValues | None = None) -> torch.Tensor:
        vectors = self.condition(conditioning)
        x = self.emb_dropout(self.inputs(tokens, vectors))
        bias = self.spatial_bias(x.shape[1]) if self.spatial_bias is not None else None
        context = vectors if self.inputs.placement == "context" else None
        hidden = self.decoder_layers(x, context=context, attn_bias=bias)
        hidden = hidden[:, self.inputs.prefix_length :]
        return F.linear(hidden, self._head_weight())

    def _head_weight(self) -> torch.Tensor:
        return self.inputs.token_embedding.weight if self.tie_embedding else self.to_logits.weight

    # -- sampling -----------------------------------------------------------------------------
    def decoder(self, batch_size: int, conditioning: ConditioningValues | None = None) -> CachedDecoder:
        vectors = self.condition(conditioning)
        if vectors is not None and vectors.shape[0] != batch_size:
            raise ValueError(f"conditioning has {vectors.shape[0]} rows for a batch of {batch_size}")
        prefix = self.inputs.prefix(vectors, batch_size)
        length = self.inputs.total_length
        bias = self.spatial_bias(length).contiguous() if self.spatial_bias is not None else None
        context = vectors if self.inputs.placement == "context" else None
        return CachedDecoder(self.export_weights(), prefix, length, context=context, attn_bias=bias)

    @torch.no_grad()
    def export_weights(self) -> DecoderWeights:
        """The x-transformers layers as the engine's lean `DecoderWeights` (references, fused QKV)."""
        layers_module = self.decoder_layers
        layers: list[AttentionWeights | FeedForwardWeights] = []
        first_attention = None
        for layer_type, (norms, block, _residual) in zip(layers_module.layer_types, layers_module.layers):
            pre_norm, post_norm, post_main = norms
            if pre_norm is None or post_main is not None:
                raise RuntimeError("xtransformer export expects a pre-norm x-transformers Decoder")
            gain, post_gain = _gain(pre_norm), (_gain(post_norm) if post_norm is not None else None)
            if layer_type in ("a", "c"):
                first_attention = first_attention or block
                gate = block.to_v_gate.weight if block.to_v_gate is not None else None
                if layer_type == "a":
                    parts = [block.to_q.weight, block.to_k.weight, block.to_v.weight] + ([gate] if gate is not None else [])
                    layers.append(AttentionWeights(gain, torch.cat(parts), block.to_out.weight, None, gate is not None, post_gain))
                else:
                    query = torch.cat([block.to_q.weight] + ([gate] if gate is not None else []))
                    key_value = torch.cat([block.to_k.weight, block.to_v.weight])
                    layers.append(AttentionWeights(gain, query, block.to_out.weight, key_value, gate is not None, post_gain))
            elif layer_type == "f":
                linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
                up, down = linears[0], linears[-1]
                glu = len(linears) == 2 and up.out_features == 2 * down.in_features
                layers.append(FeedForwardWeights(gain, up.weight, up.bias, down.weight, down.bias, glu, post_gain))
            else:
                raise RuntimeError(f"xtransformer export: unexpected layer type {layer_type!r}")
        rotary = layers_module.rotary_pos_emb
        if rotary is not None and (rotary.scale is not None or rotary.interpolation_factor != 1.0):
            raise RuntimeError("xtransformer export supports plain rotary embeddings only")
        norm_kind = "rms" if type(layers_module.final_norm).__name__ == "RMSNorm" else "layer"
        scale = first_attention.attend.scale if first_attention is not None else self.dim_head**-0.5
        positions = self.inputs.position_table()
        return DecoderWeights(
            token_embedding=self.inputs.token_embedding.weight,
            layers=layers,
            head=self._head_weight(),
            heads=self.heads,
            dim_head=self.dim_head,
            attention_scale=float(scale if scale is not None else self.dim_head**-0.5),
            norm=norm_kind,
            norm_eps=1e-5 if norm_kind == "layer" else 1e-24,
            final_norm=_gain(layers_module.final_norm),
            position_embedding=positions.detach() if positions is not None else None,
            qk_norm=bool(first_attention.qk_norm) if first_attention is not None else False,
            rotary_inv_freq=rotary.inv_freq if rotary is not None else None,
        )


def _gain(norm: nn.Module) -> torch.Tensor:
    """The effective gain of an x-transformers LayerNorm / RMSNorm (unit offset included)."""
    offset = float(getattr(norm, "unit_offset", False))
    name = type(norm).__name__
    if name == "RMSNorm":
        return norm.g + offset
    if name == "LayerNorm":
        return norm.gamma + offset
    raise RuntimeError(f"xtransformer export: unsupported norm {name}")
