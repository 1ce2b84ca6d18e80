"""Original ``xtransformer`` options against brainsynth's ``original_xtransformer``: what maps, what not.

``original_xtransformer`` re-implements the original's decoder (x-transformers 0.25.4, reference
§4.2-§4.4) under the original's flag names, so ``import-script`` carries each option over by
name and ``import-checkpoint`` loads the trained weights into it (`prior_import`). An option that
network does not reproduce must be refused by it when set (so nothing silently computes
something else) and marked ``exact=False`` here; tests/test_compat_script.py checks the two
agree by building the network with each option set. The README table is printed from
`XTRANSFORMER_OPTIONS`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OptionMapping:
    option: str
    """The original's ``run_transformer.py`` flag(s)."""
    ours: str
    """The brainsynth recipe key import-script writes (``-`` when there is none)."""
    exact: bool
    """True when the option is reproduced, so trained weights import and compute the original's outputs."""
    note: str


XTRANSFORMER_OPTIONS: tuple[OptionMapping, ...] = (
    OptionMapping("n_embd / n_layers / n_head", "network.dim / depth / heads", True, "head width 64 in both"),
    OptionMapping("vocab_size", "tokenizer codebook size", True, "BOS is the extra last id in both"),
    OptionMapping("emb_dropout / ff_dropout / attn_dropout", "network.*_dropout", True, "same places"),
    OptionMapping("tie_embedding / ff_glu / use_rezero / use_rmsnorm", "same names", True,
                  "the final norm stays a LayerNorm, as in the original"),
    OptionMapping("attn_gate_values / attn_on_attn", "same names", True, "value gate with its bias"),
    OptionMapping("sandwich_coef / sandwich_norm", "same names", True, "layer layout and post-branch norms"),
    OptionMapping("position_emb", "network.position_emb", True,
                  "rotary on q, k and v; 'fixed' is the learnt table; 'absolute' is none"),
    OptionMapping("spatial_position_emb", "network.spatial_position_emb", True,
                  "per-axis coordinate tables of the held cell"),
    OptionMapping("rel_pos_bias", "network.rel_pos_bias", True, "T5 buckets"),
    OptionMapping("spatial_rel_pos_bias / bucket_values / spatial_bias_max_dist", "same names", True,
                  "3D offset table, indexed as the original indexed it"),
    OptionMapping("conditioning_type", "conditioning.name, order: last_first", True,
                  "bos_replacement / prepend / cross_attend, vectors in the original's order"),
    OptionMapping("use_continuous_conditioning", "conditioning.variables (kind), continuous_embedding: tiled", True,
                  "raw table values (normalize: none) tiled over the width; categorical values index rows"),
    OptionMapping("attn_talking_heads / use_qk_norm_attn", "same names", True,
                  "talking-heads projections; cosine-similarity attention with its learnt scale"),
    OptionMapping("residual_attn / cross_residual_attn / gate_residual", "same names", True,
                  "post-norm with residual scores; GRU-gated residuals"),
    OptionMapping("shift_mem_down", "-", True, "inert in the original (no memories are ever passed); dropped"),
    OptionMapping("local_attn_heads / local_window_size / feature_redraw_interval / generalized_attention / use_scalenorm",
                  "-", True, "performer-only; inert with xtransformer; dropped"),
)


def options_table() -> str:
    """The README's markdown table of `XTRANSFORMER_OPTIONS`."""
    lines = ["| original option | brainsynth recipe key | weights import exactly | note |", "|---|---|---|---|"]
    for row in XTRANSFORMER_OPTIONS:
        lines.append(f"| `{row.option}` | `{row.ours}` | {'yes' if row.exact else 'no'} | {row.note} |")
    return "\n".join(lines)
