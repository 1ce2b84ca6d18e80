"""Golden outputs of the original BrainSynth ``XTransformer`` for brainsynth's ``original_xtransformer``.

Run it in a separate environment holding the original's libraries (x-transformers 0.25.4, monai
0.6.0, ...; see README.md next to this file), never in brainsynth's own environment:

    cd /work/main && /work/orig-venv/bin/python tools/original_golden/xtransformer_golden.py \
        --original /work/original_src --out tests/data/original_priors

For every configuration below it builds the original network (with the original's own
`Ordering` and `RelativeSpatialPositioning`, as run_transformer.py does) at tiny sizes, gives
EVERY parameter and buffer-backed table random values (norm gains and biases, gate biases, the
spatial bias table, ...) so that a wrong weight mapping cannot pass, and writes:

* ``xt_<name>.pt``: the checkpoint as the original trainer saved it under DDP
  (``{"network": {"module.<key>": tensor}}``), or, for configurations marked ``bare``, the
  network's plain ``state_dict``;
* ``xtransformer_io.pt``: per configuration, the teacher-forcing inputs (BOS + tokens), the raw
  conditioning values, the original's eval-mode logits, its greedy (arg-max) samples as token grids
  from its own ``sample`` method, and its sequence ordering;
* ``xtransformer_manifest.json``: each configuration's options (run_transformer.py flag names),
  its conditioning variables, grid and vocabulary, and the library versions used.

In ``xtransformer_io.pt`` the conditioning of a configuration is one [B, K] float tensor, column k
holding variable k of the manifest's ``variables`` (categorical codes as whole numbers); the
original received them as K tensors [B, 1] (long for categorical ones). ``sequence_ordering`` is the
original's ``Ordering.get_sequence_ordering()`` for the grid (the same for every configuration).

Only tensors, numbers, strings, lists and dicts are saved (brainsynth reads them with
``torch.load(weights_only=True)``). What this script shares with performer_golden.py (ordering,
conditioning variables, command line, seeding, checkpoint forms, manifest) is in golden_common.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from golden_common import (
    BATCH,
    CONTINUOUS_4,
    MIXED_3,
    ORDERING,
    command_line,
    conditioning_values,
    manifest_entry,
    randomise_parameters,
    save_checkpoint,
    seeded_attempts,
    teacher_forcing_inputs,
    write_manifest,
)

GRID = (2, 3, 4)
"""Latent grid (h, w, d): 24 tokens, three different sizes (so an axis mix-up shows), small files."""
VOCAB = 8
"""Codebook size; the network's vocabulary is VOCAB + 1 (BOS = VOCAB)."""

UKB = dict(
    dim=4,
    depth=2,
    heads=2,
    emb_dropout=0.0,
    ff_dropout=0.0,
    attn_dropout=0.0,
    tie_embedding=False,
    ff_glu=False,
    use_rezero=False,
    position_emb="rotary",
    spatial_position_emb=None,
    use_rmsnorm=True,
    attn_talking_heads=False,
    attn_gate_values=True,
    attn_on_attn=False,
    sandwich_coef=None,
    sandwich_norm=False,
    rel_pos_bias=False,
    spatial_rel_pos_bias=True,
    bucket_values=False,
    spatial_bias_max_dist=50,
    use_qk_norm_attn=False,
    residual_attn=False,
    cross_residual_attn=False,
    gate_residual=False,
)
"""The published UKB options (ukb_transformer.sh), at tiny width and depth."""


def variant(depth: int = 1, conditioning_type: str = "cross_attend", variables=CONTINUOUS_4, heads: int = 1, **changes) -> dict:
    """UKB with some options changed, at width 4 and one head (two in a few) to keep files small."""
    options = dict(UKB, dim=4, depth=depth, heads=heads)
    options.update(changes)
    return {"options": options, "conditioning_type": conditioning_type, "variables": variables}


CONFIGS: dict[str, dict] = {
    "ukb": {"options": dict(UKB), "conditioning_type": "cross_attend", "variables": CONTINUOUS_4, "bare": False},
    "no_spatial_bias": dict(variant(spatial_rel_pos_bias=False), bare=True),
    "layernorm_ff_glu_tie_no_gate": variant(use_rmsnorm=False, ff_glu=True, tie_embedding=True, attn_gate_values=False),
    "position_fixed_spatial_absolute": variant(position_emb="fixed", spatial_position_emb="absolute"),
    "prepending": variant(depth=2, heads=2, conditioning_type="prepending"),
    "bos_replacement": variant(conditioning_type="bos_replacement", variables=MIXED_3),
    "none_sandwich_coef": variant(depth=2, conditioning_type="none", variables=[], sandwich_coef=1),
    "bucket_values": variant(bucket_values=True, spatial_bias_max_dist=2),
    "talking_heads_qk_norm_on_attn_sandwich_norm": variant(
        heads=2,
        conditioning_type="none",
        variables=[],
        attn_talking_heads=True,
        use_qk_norm_attn=True,
        attn_on_attn=True,
        sandwich_norm=True,
    ),
    "residual_attn_gru_qk_norm": variant(
        depth=2, residual_attn=True, cross_residual_attn=True, gate_residual=True, use_qk_norm_attn=True
    ),
    "rezero_t5_bias_prepending": variant(
        use_rezero=True, rel_pos_bias=True, position_emb="fixed", conditioning_type="prepending"
    ),
    "absolute_fixed_spatial_fixed_prepending": variant(
        position_emb="absolute",
        spatial_position_emb="fixed",
        spatial_rel_pos_bias=False,
        use_rmsnorm=False,
        conditioning_type="prepending",
    ),
}


def build_original(config: dict, original: Path):
    """The original network, constructed as run_transformer.py / configure.py construct it."""
    from src.networks.transformers.img2seq_ordering import Ordering, RelativeSpatialPositioning
    from src.networks.transformers.xtransformer import XTransformer

    o = config["options"]
    variables = config["variables"]
    conditioning_num_tokens = [v["levels"] if v["kind"] == "categorical" else -1 for v in variables]
    ordering = Ordering(spatial_dims=3, dimensions=(1,) + GRID, **ORDERING)
    relative = RelativeSpatialPositioning(
        spatial_dims=3,
        dimensions=(1,) + GRID,
        ordering=ordering.get_sequence_ordering(),
        bucket_values=o["bucket_values"],
        bucket_beta=o["spatial_bias_max_dist"],
        conditioning_length=len(conditioning_num_tokens) if config["conditioning_type"] == "prepending" else 0,
    )
    network = XTransformer(
        dim=o["dim"],
        depth=o["depth"],
        num_tokens=VOCAB + 1,
        max_seq_len=int(torch.tensor(GRID).prod()) + 1,
        ordering=ordering,
        emb_dropout=o["emb_dropout"],
        ff_dropout=o["ff_dropout"],
        attn_dropout=o["attn_dropout"],
        tie_embedding=o["tie_embedding"],
        use_pos_emb=o["position_emb"] == "fixed",
        heads=o["heads"],
        use_rezero=o["use_rezero"],
        rotary_pos_emb=o["position_emb"] == "rotary",
        use_rmsnorm=o["use_rmsnorm"],
        ff_glu=o["ff_glu"],
        attn_talking_heads=o["attn_talking_heads"],
        attn_on_attn=o["attn_on_attn"],
        attn_gate_values=o["attn_gate_values"],
        sandwich_coef=o["sandwich_coef"],
        sandwich_norm=o["sandwich_norm"],
        rel_pos_bias=o["rel_pos_bias"],
        spatial_rel_pos_bias=o["spatial_rel_pos_bias"],
        relative_spatial_pos_attr=relative,
        use_qk_norm_attn=o["use_qk_norm_attn"],
        spatial_position_emb=o["spatial_position_emb"],
        spatial_shape=GRID,
        conditioning_num_tokens=conditioning_num_tokens,
        conditioning_type=config["conditioning_type"],
        gate_residual=o["gate_residual"],
        shift_mem_down=0,
        residual_attn=o["residual_attn"],
        cross_residual_attn=o["cross_residual_attn"],
        pre_norm=not (o["residual_attn"] or o["cross_residual_attn"]),
    )
    return network, ordering


def randomise(network: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter gets random values; gains stay near 1 so activations stay well scaled."""
    randomise_parameters(
        network, generator, fan_in=lambda parameter: max(parameter.shape[-1] if parameter.ndim == 2 else 1, 1)
    )


def main() -> None:
    args = command_line(__doc__.splitlines()[0])
    import x_transformers  # noqa: F401  (version check below)

    io, manifest_configs = {}, {}
    length = int(torch.tensor(GRID).prod())
    for index, (name, config) in enumerate(CONFIGS.items()):
        for seed, generator in seeded_attempts(index, 20):
            network, ordering = build_original(config, args.original)
            randomise(network, generator)
            network.eval()
            inputs = teacher_forcing_inputs(VOCAB, length, generator)
            conditionings = conditioning_values(config["variables"], generator)
            passed = conditionings if config["conditioning_type"] != "none" else None
            with torch.no_grad():
                logits = network(inputs, passed)
                greedy = network.sample(torch.full((BATCH, 1), VOCAB), conditioning=passed, sample=False)
            if not bool((greedy == VOCAB).any()):
                break  # brainsynth never samples BOS; the original could, so keep draws without it
        else:
            raise RuntimeError(f"{name}: every seed sampled BOS greedily")
        file_name = f"xt_{name}.pt"
        save_checkpoint(args.out / file_name, network.state_dict(), bare=config.get("bare", False), clone=True)
        io[name] = {
            "inputs": inputs.clone(),
            "conditioning": torch.cat([c.float() for c in conditionings], dim=1) if conditionings else torch.zeros(BATCH, 0),
            "logits": logits.clone(),
            "greedy_grid": greedy.clone(),
        }
        sequence_ordering = torch.as_tensor(ordering.get_sequence_ordering().copy()).long()
        manifest_configs[name] = manifest_entry(config, file_name, seed)
        print(f"{name}: seed {seed}, {sum(p.numel() for p in network.parameters())} parameters")
    io["sequence_ordering"] = sequence_ordering
    torch.save(io, args.out / "xtransformer_io.pt")
    write_manifest(
        args.out / "xtransformer_manifest.json",
        generator="tools/original_golden/xtransformer_golden.py",
        packages=("torch", "x-transformers", "monai", "numpy", "einops"),
        grid=GRID,
        vocab=VOCAB,
        io="xtransformer_io.pt",
        configs=manifest_configs,
    )


if __name__ == "__main__":
    main()
