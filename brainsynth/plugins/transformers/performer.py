"""The `performer` prior: FAVOR+ linear attention from performer-pytorch.

The layers are `performer_pytorch.Performer` (causal, no qkv/out biases, as the original built
it); on CPU the library uses its pure-PyTorch causal path. Token embedding, conditioning
placement, positions and head are ours (`SequenceInput`). The library has no key/value or
recurrent-state cache; sampling uses our `PerformerDecoder` (running FAVOR+ sums, window cache),
which reproduces the library's eval forward on each growing prefix.
Options the library cannot honour are recipe errors, not silent no-ops.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.core.errors import RecipeError
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, ConditioningValues, Prior, TokenDecoder, sequence_length_of

from .sequence_input import SequenceInput, sinusoidal_table


def _import_performer():
    """Import performer-pytorch quietly (it warns about distutils and prints about its CUDA kernel)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from performer_pytorch import Performer
    return Performer


class PerformerPrior(Prior):
    """Decoder-only Performer (FAVOR+ attention, optional exact local-window heads).

    `position_emb`: ``rotary`` (fixed sinusoidal input embedding + rotary in every layer, the
    original's mapping), ``fixed`` (sinusoidal only) or ``absolute`` (learned). `local_attn_heads`
    of the `heads` use exact causal attention over a window of `local_window_size`.
    `spatial_pos_emb`: ``true`` embeds the grid coordinates of the cell each position predicts
    (learned); ``absolute`` / ``fixed`` are the original's learned / sinusoidal embeddings of the
    coordinates of the token each position holds (see `SequenceInput`).

    `sampling_decoder`: ``recurrent`` (one token's work per step, `PerformerDecoder`) or
    ``recompute`` (re-run the prefix per token, as the original sampled). performer-pytorch's
    FAVOR+ key features depend on the maximum over the whole input, so with two or more layers
    holding FAVOR+ heads the original's samples are reproduced exactly only by ``recompute``;
    ``recurrent`` follows them closely (logits within ~1e-3 at initialisation), and exactly for
    one layer or local heads only.
    """

    def __init__(
        self,
        dim: int = 512,
        depth: int = 8,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        local_attn_heads: int = 0,
        local_window_size: int = 256,
        nb_features: int | None = None,
        feature_redraw_interval: int = 1000,
        generalized_attention: bool = False,
        use_scalenorm: bool = False,
        use_rezero: bool = False,
        ff_glu: bool = False,
        emb_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        position_emb: Literal["rotary", "fixed", "absolute"] = "rotary",
        spatial_pos_emb: bool | Literal["absolute", "fixed"] = False,
        spatial_rel_pos_bias: bool = False,
        tie_embedding: bool = False,
        sampling_decoder: Literal["recurrent", "recompute"] = "recurrent",
        *,
        num_tokens: int,
        max_seq_len: int | None = None,
        ordering: Ordering | None = None,
        conditioning: Conditioning | None = None,
    ) -> None:
        super().__init__()
        owner = "network (performer)"
        if spatial_rel_pos_bias:
            raise RecipeError(
                f"{owner}: spatial_rel_pos_bias needs explicit attention scores, which FAVOR+ never forms; "
                f"use network name 'xtransformer' for it, or spatial_pos_emb: true here."
            )
        if sampling_decoder not in ("recurrent", "recompute"):
            raise RecipeError(f"{owner}: sampling_decoder must be recurrent or recompute, got {sampling_decoder!r}.")
        self.sampling_decoder = sampling_decoder
        self.has_cached_decoder = sampling_decoder == "recurrent"
        if not 0 <= local_attn_heads <= heads:
            raise RecipeError(f"{owner}: local_attn_heads must be in 0..heads ({heads}), got {local_attn_heads}.")
        if use_scalenorm and use_rezero:
            raise RecipeError(f"{owner}: choose one of use_scalenorm and use_rezero.")
        if spatial_pos_emb and ordering is None:
            raise RecipeError(f"{owner}: spatial_pos_emb needs the ordering (the engine supplies it).")
        if conditioning is not None and conditioning.placement == "context" and conditioning.dim != dim:
            raise RecipeError(
                f"{owner}: performer-pytorch cross-attention needs a context as wide as the model ({dim}); "
                f"the conditioning makes {conditioning.dim}-wide vectors. Drop conditioning.dim or use 'xtransformer'."
            )
        self.num_tokens = num_tokens
        self.sequence_length = sequence_length_of(ordering, max_seq_len, owner)
        self.conditioning = conditioning
        self.tie_embedding = tie_embedding
        self.inputs = SequenceInput(
            num_tokens,
            dim,
            self.sequence_length,
            conditioning,
            positions="absolute" if position_emb == "absolute" else "fixed",
            spatial_coordinates=ordering.coordinates() if spatial_pos_emb else None,
            owner=owner,
            spatial_mode=spatial_pos_emb if isinstance(spatial_pos_emb, str) else "learned",
        )
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.cross_attend = self.inputs.placement == "context"
        Performer = _import_performer()
        with contextlib.redirect_stdout(io.StringIO()):  # one "unable to import cuda code" line per layer
            self.layers = Performer(
                dim=dim,
                depth=depth,
                heads=heads,
                dim_head=dim_head,
                local_attn_heads=local_attn_heads,
                local_window_size=local_window_size,
                causal=True,
                ff_mult=ff_mult,
                nb_features=nb_features,
                feature_redraw_interval=feature_redraw_interval,
                generalized_attention=generalized_attention,
                use_scalenorm=use_scalenorm,
                use_rezero=use_rezero,
                ff_glu=ff_glu,
                ff_dropout=ff_dropout,
                attn_dropout=attn_dropout,
                cross_attend=self.cross_attend,
                qkv_bias=False,
                attn_out_bias=False,
            )
        if position_emb == "rotary":
            self.register_buffer("layer_rotary", sinusoidal_table(self.inputs.total_length, dim_head), persistent=False)
        else:
            self.layer_rotary = None
        self.norm = nn.LayerNorm(dim)
        self.to_logits = None if tie_embedding else nn.Linear(dim, num_tokens)

    def forward(self, tokens: torch.Tensor, conditioning: ConditioningValues | None = None) -> torch.Tensor:
        vectors = self.condition(conditioning)
        x = self.emb_dropout(self.inputs(tokens, vectors))
        options = {}
        if self.layer_rotary is not None:
            options["pos_emb"] = self.layer_rotary[None, : x.shape[1]].to(x.dtype)
        if self.cross_attend:
            options["context"] = vectors.to(x)  # parameter-free (tiled) conditioning is built on the CPU
        hidden = self.norm(self.layers(x, **options))[:, self.inputs.prefix_length :]
        if self.tie_embedding:
            return F.linear(hidden, self.inputs.token_embedding.weight)
        return self.to_logits(hidden)

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the original BrainSynth performer's weights (DDP ``module.`` prefix already stripped).

        Strict: every original key is consumed and every shape checked; the first missing,
        unexpected or mis-shaped key is a `CheckpointError` (see `performer_original`).
        """
        from .performer_original import load_original_performer

        load_original_performer(self, state)

    def decoder(self, batch_size: int, conditioning: ConditioningValues | None = None) -> TokenDecoder:
        """One token's work per step (FAVOR+ running sums, a window cache for local heads), unless
        `sampling_decoder` is ``recompute``."""
        from .performer_decoder import PerformerDecoder

        if self.sampling_decoder == "recompute":
            return super().decoder(batch_size, conditioning)
        return PerformerDecoder(self, batch_size, conditioning)
