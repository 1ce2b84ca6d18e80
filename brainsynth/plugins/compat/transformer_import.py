"""Original ``xtransformer`` options against brainsynth's ``xtransformer``: what maps exactly, what not.

The original builds its decoder from x-transformers 0.25.4 (reference §4.2-§4.4); brainsynth's
``xtransformer`` builds on x-transformers 2.x, whose layers changed underneath the same option
names: the attention output projection and the LayerNorms lost their biases, the value gate its
bias, rotary embeddings no longer rotate the values, and the final norm follows ``use_rmsnorm``.
`XTRANSFORMER_OPTIONS` records, option by option, how ``import-script`` converts it and whether
trained weights carry over exactly; the README table is printed from it. Weights are imported
only when every option in play maps exactly — which no original xtransformer checkpoint meets
today, because its attention output bias is present in every configuration — so
`reject_transformer_checkpoint` names each option that blocks the import.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import torch

from brainsynth.core.errors import CheckpointError
from brainsynth.core.recipe import Recipe

from .original_checkpoint import OriginalCheckpoint


@dataclasses.dataclass(frozen=True)
class OptionMapping:
    option: str
    """The original's ``run_transformer.py`` flag (or a structural part every checkpoint has)."""
    ours: str
    """The brainsynth recipe key import-script writes (``-`` when there is none)."""
    exact: bool
    """True when trained weights and outputs carry over exactly."""
    note: str


XTRANSFORMER_OPTIONS: tuple[OptionMapping, ...] = (
    OptionMapping("n_embd", "network.dim", True, "same width"),
    OptionMapping("n_layers", "network.depth", True, "same block count ('a','f') or ('a','c','f')"),
    OptionMapping("n_head", "network.heads, attn_dim_head: 64", True, "dim_head fixed at 64 in both"),
    OptionMapping("vocab_size", "tokenizer codebook size", True, "BOS is the extra last id in both"),
    OptionMapping("emb_dropout / ff_dropout / attn_dropout", "network.*_dropout", True, "no weights; same places"),
    OptionMapping("tie_embedding", "network.tie_embedding", True, "logits = hidden x token embedding^T"),
    OptionMapping("ff_glu", "network.ff_glu", True, "GLU feed-forward, same (value, gate) split"),
    OptionMapping("position_emb='absolute' (default)", "rotary_pos_emb: false", True, "no position embedding in both"),
    OptionMapping("shift_mem_down", "-", True, "inert in the original (no memories are ever passed); dropped"),
    OptionMapping("local_attn_heads / local_window_size / feature_redraw_interval / generalized_attention / use_scalenorm",
                  "-", True, "performer-only; inert with xtransformer; dropped"),
    OptionMapping("attention output bias (every configuration)", "-", False,
                  "0.25.4's Attention.to_out has a bias; x-transformers 2.x has none"),
    OptionMapping("LayerNorm (default norm)", "pre-norm LayerNorm", False, "0.25.4 LayerNorms have a bias; 2.x LayerNorms are bias-free"),
    OptionMapping("position_emb='rotary'", "network.rotary_pos_emb, rotary_emb_dim: 32", False,
                  "0.25.4 rotates queries, keys and values; 2.x rotates queries and keys"),
    OptionMapping("position_emb='fixed'", "network.use_abs_pos_emb", False, "learnt absolute embedding with another scale and table"),
    OptionMapping("use_rmsnorm", "network.use_rmsnorm", False, "the original's final norm stays a LayerNorm; ours becomes RMSNorm"),
    OptionMapping("attn_gate_values", "network.attn_gate_values", False, "the original's gate has a bias (initialised to 1); ours has none"),
    OptionMapping("spatial_rel_pos_bias / bucket_values / spatial_bias_max_dist", "network.spatial_rel_pos_bias",
                  False, "other offset-id table; the original indexes the predicted cell, one position ahead"),
    OptionMapping("spatial_position_emb", "network.spatial_pos_emb", False, "per-axis coordinate tables in the original"),
    OptionMapping("use_qk_norm_attn", "network.attn_qk_norm", False, "different qk-norm scale semantics"),
    OptionMapping("sandwich_norm", "network.sandwich_norm", False, "its LayerNorms carry biases"),
    OptionMapping("conditioning_type / use_continuous_conditioning", "conditioning.*", False,
                  "the original tiles raw values; brainsynth normalises them and embeds them"),
    OptionMapping("attn_talking_heads", "-", False, "not offered by brainsynth's xtransformer"),
    OptionMapping("attn_on_attn", "-", False, "not offered"),
    OptionMapping("use_rezero", "-", False, "not offered (gone from x-transformers 2.x)"),
    OptionMapping("sandwich_coef", "-", False, "not offered"),
    OptionMapping("rel_pos_bias", "-", False, "T5 bucketed bias not offered"),
    OptionMapping("residual_attn / cross_residual_attn", "-", False, "not offered"),
    OptionMapping("gate_residual", "-", False, "not offered"),
)


def options_table() -> str:
    """The README's markdown table of `XTRANSFORMER_OPTIONS`."""
    lines = ["| original option | brainsynth recipe key | weights import exactly | why |", "|---|---|---|---|"]
    for row in XTRANSFORMER_OPTIONS:
        lines.append(f"| `{row.option}` | `{row.ours}` | {'yes' if row.exact else 'no'} | {row.note} |")
    return "\n".join(lines)


_TRANSFORMER_KEY = re.compile(r"^(module\.)?(attn_layers\.|token_emb\.|performer\.|to_logits\.)")

_DETECTORS: tuple[tuple[str, re.Pattern], ...] = (
    ("attention output bias (every configuration)", re.compile(r"\.to_out(\.0)?\.bias$")),
    ("LayerNorm (default norm)", re.compile(r"^(module\.)?(attn_layers\.layers\.\d+\.0\.\d+|norm)\.bias$")),
    ("position_emb='rotary'", re.compile(r"rotary_pos_emb\.inv_freq$")),
    ("use_rmsnorm", re.compile(r"attn_layers\.layers\.\d+\.0\.\d+\.g$")),
    ("attn_gate_values", re.compile(r"\.to_v_gate\.")),
    ("spatial_rel_pos_bias / bucket_values / spatial_bias_max_dist", re.compile(r"rel_pos\.rp_buckets$")),
    ("rel_pos_bias", re.compile(r"rel_pos\.relative_attention_bias\.weight$")),
    ("attn_talking_heads", re.compile(r"(pre|post)_softmax_proj$")),
    ("gate_residual", re.compile(r"\.2\.gru\.")),
    ("spatial_position_emb", re.compile(r"spatial_pos_emb|spatial_position_emb")),
)


def looks_like_original_transformer(state: Mapping[str, torch.Tensor]) -> bool:
    return any(_TRANSFORMER_KEY.match(key) for key in state)


def blocking_options(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The options of `state` (an original xtransformer state dict) whose weights do not map exactly."""
    found: list[str] = []
    keys = list(state)
    for option, pattern in _DETECTORS:
        matching = [k for k in keys if pattern.search(k)]
        if option == "rel_pos_bias" and any("rp_buckets" in k for k in keys):
            continue  # the spatial bias reuses the T5 module name; reported above
        if option in ("attention output bias (every configuration)", "LayerNorm (default norm)"):
            matching = [k for k in matching if bool(torch.count_nonzero(state[k]))]  # all-zero biases are exact
        if matching:
            found.append(f"{option} ({matching[0]})")
    return found


def reject_transformer_checkpoint(source: OriginalCheckpoint, recipe: Recipe) -> None:
    """Refuse a transformer checkpoint, naming every original option whose weights do not map exactly."""
    state = source.state
    if any(k.split(".", 1)[-1].startswith("performer.") or k.startswith("performer.") for k in state):
        raise CheckpointError(
            f"{source.path}: a checkpoint of the original performer; brainsynth imports original baseline_vqvae "
            f"weights only (transformer weights: see the README table of exactly-mapping options)."
        )
    blocking = blocking_options(state) if looks_like_original_transformer(state) else []
    if not blocking:
        raise CheckpointError(
            f"{source.path}: not an original baseline_vqvae checkpoint and not an original xtransformer whose "
            f"options all map exactly; brainsynth imports only those."
        )
    rest = f" (also: {'; '.join(blocking[1:])})" if len(blocking) > 1 else ""
    raise CheckpointError(
        f"{source.path}: an original xtransformer checkpoint cannot be imported exactly: option "
        f"{blocking[0]} does not map onto brainsynth's xtransformer{rest}. Its weights would compute other "
        f"outputs; retrain the prior with the recipe from 'brainsynth import-script' (the README lists which "
        f"options map exactly)."
    )
