"""Golden outputs of the original BrainSynth ``Performer`` for brainsynth's ``performer`` prior.

Run it in a separate environment holding the original's libraries (performer-pytorch 1.1.4,
local-attention 1.11.2, monai 0.6.0, ...; see README.md next to this file), never in
brainsynth's own environment:

    cd /work/main && /work/orig-venv/bin/python tools/original_golden/performer_golden.py \
        --original /work/original_src --out tests/data/original_priors

For every configuration below it builds the original wrapper (``src/networks/transformers/
performer.py``, with the original's own `Ordering`, keyword for keyword as configure.py builds
it) at tiny sizes, gives EVERY parameter and every FAVOR+ projection matrix random values (norm
gains and biases, ReZero / ScaleNorm gains included) so a wrong weight mapping cannot pass, and
writes:

* ``performer_<name>.pt``: the checkpoint as the original trainer saved it under DDP
  (``{"network": {"module.<key>": ...}, "optimizer": ..., "lr_scheduler": ..., "trainer": ...}``),
  or, for configurations marked ``bare``, the network's plain ``state_dict``;
* ``performer_io.pt``: per configuration, the teacher-forcing inputs (BOS + tokens), the raw
  conditioning values (the original's per-variable [B, 1] tensors), the original's eval-mode
  logits, its greedy samples (token grids from its own ``sample(..., sample=False)``), the
  same samples in model order, and its sequence ordering;
* ``performer_manifest.json``: each configuration's options (run_transformer.py flag names, plus
  the wrapper's ``dim_head``), its conditioning variables, grid and vocabulary, and versions.

Sizes: dim_head is 16 here (the CLI fixes 64) so that the projection matrices (dim_head x
int(dim_head * ln dim_head)) and attention weights keep every file a few KB; nothing in the
mapping or the numerics depends on the head width.

Only tensors, numbers, strings, lists and dicts are saved (brainsynth reads them with
``torch.load(weights_only=True)``). What this script shares with xtransformer_golden.py (ordering,
conditioning variables, command line, seeding, checkpoint forms, manifest) is in golden_common.py.
"""

from __future__ import annotations

import warnings

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

GRID = (3, 4, 3)
"""Latent grid (h, w, d): 36 tokens; with a local window of 8 that is 5 buckets."""
VOCAB = 16
"""Codebook size; the network's vocabulary is VOCAB + 1 (BOS = VOCAB)."""

CONTINUOUS_3 = CONTINUOUS_4[:3]

PUBLISHED = dict(
    n_embd=8,
    n_layers=2,
    n_head=2,
    dim_head=16,
    local_attn_heads=1,
    local_window_size=8,
    feature_redraw_interval=1,
    generalized_attention=False,
    use_scalenorm=False,
    use_rezero=False,
    tie_embedding=False,
    emb_dropout=0.001,
    ff_dropout=0.001,
    attn_dropout=0.001,
    position_emb="rotary",
    spatial_position_emb=None,
)
"""The published performer-relevant options (rotary, local heads, redraw every call), tiny."""


def variant(conditioning_type: str, variables: list, depth: int = 1, bare: bool = False, **changes) -> dict:
    options = dict(PUBLISHED, n_layers=depth)
    options.update(changes)
    return {"options": options, "conditioning_type": conditioning_type, "variables": variables, "bare": bare}


CONFIGS: dict[str, dict] = {
    "published": variant("cross_attend", CONTINUOUS_4, depth=2),
    "global_fixed_prepending": variant("prepending", CONTINUOUS_3, local_attn_heads=0, position_emb="fixed", bare=True),
    "absolute_bos_replacement": variant("bos_replacement", MIXED_3, depth=2, position_emb="absolute"),
    "none_spatial_absolute_scalenorm": variant(
        "none", [], spatial_position_emb="absolute", use_scalenorm=True, local_window_size=4
    ),
    "prepending_spatial_fixed_rezero_tie": variant(
        "prepending", MIXED_3, position_emb="fixed", spatial_position_emb="fixed", use_rezero=True, tie_embedding=True
    ),
    "cross_categorical_generalized": variant("cross_attend", MIXED_3, generalized_attention=True),
    "all_local_absolute_spatial_prepending": variant(
        "prepending", CONTINUOUS_3, local_attn_heads=2, position_emb="absolute", spatial_position_emb="absolute",
        local_window_size=16,
    ),
    "window_beyond_sequence": variant("none", [], local_window_size=64, feature_redraw_interval=1000),
}


def build_original(config: dict):
    """The original wrapper, constructed with configure.py's keywords (plus dim_head)."""
    from src.networks.transformers.img2seq_ordering import Ordering
    from src.networks.transformers.performer import Performer

    o = config["options"]
    variables = config["variables"]
    conditioning_num_tokens = [v["levels"] if v["kind"] == "categorical" else -1 for v in variables]
    ordering = Ordering(spatial_dims=3, dimensions=(1,) + GRID, **ORDERING)
    network = Performer(
        causal=True,
        ordering=ordering,
        num_tokens=VOCAB + 1,
        max_seq_len=int(torch.tensor(GRID).prod()) + 1,
        dim=o["n_embd"],
        depth=o["n_layers"],
        heads=o["n_head"],
        dim_head=o["dim_head"],
        local_attn_heads=o["local_attn_heads"],
        local_window_size=o["local_window_size"],
        feature_redraw_interval=o["feature_redraw_interval"],
        generalized_attention=o["generalized_attention"],
        emb_dropout=o["emb_dropout"],
        ff_dropout=o["ff_dropout"],
        attn_dropout=o["attn_dropout"],
        use_scalenorm=o["use_scalenorm"],
        use_rezero=o["use_rezero"],
        tie_embed=o["tie_embedding"],
        rotary_position_emb=o["position_emb"] == "rotary",
        fixed_position_emb=o["position_emb"] == "fixed",
        axial_position_emb=False,
        spatial_position_emb=o["spatial_position_emb"],
        spatial_shape=GRID,
        conditioning_num_tokens=conditioning_num_tokens,
        conditioning_type=config["conditioning_type"],
    )
    return network, ordering


@torch.no_grad()
def randomise(network: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter and projection matrix gets random values; gains stay near their scale."""
    from performer_pytorch.performer_pytorch import FastAttention

    # ScaleNorm's gain (shape (1,)) scales a unit-norm vector: near sqrt(dim), not 1
    randomise_parameters(network, generator, fan_in=lambda parameter: parameter.shape[-1], scalar_gain=network.dim**0.5)
    for module in network.modules():
        if isinstance(module, FastAttention):
            module.projection_matrix.copy_(torch.randn(module.projection_matrix.shape, generator=generator))


def main() -> None:
    args = command_line(__doc__.splitlines()[0])
    warnings.simplefilter("ignore")
    io, manifest_configs = {}, {}
    length = int(torch.tensor(GRID).prod())
    for index, (name, config) in enumerate(CONFIGS.items()):
        for seed, generator in seeded_attempts(index, 50):
            network, ordering = build_original(config)
            randomise(network, generator)
            network.eval()
            projections = [b.clone() for n, b in network.named_buffers() if n.endswith("projection_matrix")]
            inputs = teacher_forcing_inputs(VOCAB, length, generator)
            conditionings = conditioning_values(config["variables"], generator)
            passed = conditionings or None
            with torch.no_grad():
                logits = network(inputs.clone(), passed)
                greedy = network.sample(torch.full((BATCH, 1), VOCAB), conditioning=passed, sample=False)
            after = [b for n, b in network.named_buffers() if n.endswith("projection_matrix")]
            if not all(torch.equal(a, b) for a, b in zip(projections, after)):
                raise RuntimeError(f"{name}: the eval forward redrew a projection matrix")
            if not bool((greedy == VOCAB).any()):
                break  # brainsynth never samples BOS; the original could, so keep draws without it
        else:
            raise RuntimeError(f"{name}: every seed sampled BOS greedily")
        state = network.state_dict()  # tensors share storage (net.* and proj_updater.instance.*): saved once
        file_name = f"performer_{name}.pt"
        save_checkpoint(args.out / file_name, state, bare=config["bare"], clone=False, trained=network)
        order = torch.as_tensor(ordering.get_sequence_ordering().copy()).long()
        io[name] = {
            "inputs": inputs.clone(),
            "conditioning": [c.clone() for c in conditionings],
            "logits": logits.clone(),
            "greedy_grid": greedy.clone(),
            "greedy_sequence": greedy.reshape(BATCH, -1)[:, order].clone(),
            "sequence_ordering": order,
        }
        manifest_configs[name] = manifest_entry(config, file_name, seed)
        size = (args.out / file_name).stat().st_size
        print(f"{name}: seed {seed}, {sum(p.numel() for p in network.parameters())} parameters, {size} bytes")
    torch.save(io, args.out / "performer_io.pt")
    write_manifest(
        args.out / "performer_manifest.json",
        generator="tools/original_golden/performer_golden.py",
        packages=("torch", "performer-pytorch", "local-attention", "monai", "numpy", "einops"),
        grid=GRID,
        vocab=VOCAB,
        io="performer_io.pt",
        configs=manifest_configs,
        indent=1,
    )


if __name__ == "__main__":
    main()
