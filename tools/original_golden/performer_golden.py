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
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path

import torch

GRID = (3, 4, 3)
"""Latent grid (h, w, d): 36 tokens; with a local window of 8 that is 5 buckets."""
VOCAB = 16
"""Codebook size; the network's vocabulary is VOCAB + 1 (BOS = VOCAB)."""
ORDERING = dict(
    ordering_type="raster_scan",
    reflected_spatial_dims=(False, False, False),
    transpositions_axes=((2, 0, 1),),
    rot90_axes=((0, 1),),
    transformation_order=("rotate_90", "transpose"),
)
"""The published UKB/ADNI ordering (reference §4.7)."""
BATCH = 2

CONTINUOUS_4 = [{"column": f"c{i}", "kind": "continuous"} for i in range(4)]
CONTINUOUS_3 = CONTINUOUS_4[:3]
MIXED_3 = [
    {"column": "c0", "kind": "continuous"},
    {"column": "group", "kind": "categorical", "levels": 3},
    {"column": "c2", "kind": "continuous"},
]

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

    for name, parameter in network.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if name.endswith(".g"):  # ReZero / ScaleNorm gains (scalars)
            scale = network.dim**0.5 if parameter.shape == (1,) else 1.0
            parameter.copy_(scale * (1.0 + 0.3 * noise))
        elif parameter.ndim == 1 and name.endswith("weight"):  # LayerNorm gains
            parameter.copy_(1.0 + 0.3 * noise)
        elif parameter.ndim == 1:
            parameter.copy_(0.5 * noise)
        else:
            fan_in = parameter.shape[-1]
            parameter.copy_(noise / fan_in**0.5 * 1.5)
    for module in network.modules():
        if isinstance(module, FastAttention):
            module.projection_matrix.copy_(torch.randn(module.projection_matrix.shape, generator=generator))


def conditioning_values(variables: list[dict], generator: torch.Generator) -> list[torch.Tensor]:
    """The original's per-variable [B, 1] tensors: float for continuous, long codes for categorical."""
    values = []
    for v in variables:
        if v["kind"] == "categorical":
            values.append(torch.randint(0, v["levels"], (BATCH, 1), generator=generator))
        else:
            values.append(torch.randn(BATCH, 1, generator=generator))
    return values


def training_dict(network: torch.nn.Module, state: dict) -> dict:
    """What the original's CheckpointSaver wrote under DDP: network, optimizer, scheduler, trainer."""
    optimizer = torch.optim.Adam(network.parameters(), lr=5e-4)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999)
    return {
        "network": {f"module.{k}": v for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "trainer": {"epoch_length": 10, "max_epochs": 500, "iteration": 30},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", required=True, type=Path, help="checkout of github.com/AmigoLab/BrainSynth")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.original.resolve()))
    warnings.simplefilter("ignore")
    from importlib.metadata import version

    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    io, manifest_configs = {}, {}
    length = int(torch.tensor(GRID).prod())
    for index, (name, config) in enumerate(CONFIGS.items()):
        for attempt in range(50):
            seed = 1000 * index + attempt
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            network, ordering = build_original(config)
            randomise(network, generator)
            network.eval()
            projections = [b.clone() for n, b in network.named_buffers() if n.endswith("projection_matrix")]
            tokens = torch.randint(0, VOCAB, (BATCH, length - 1), generator=generator)
            inputs = torch.cat([torch.full((BATCH, 1), VOCAB), tokens], dim=1)
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
        checkpoint = dict(state) if config["bare"] else training_dict(network, state)
        file_name = f"performer_{name}.pt"
        torch.save(checkpoint, args.out / file_name)
        order = torch.as_tensor(ordering.get_sequence_ordering().copy()).long()
        io[name] = {
            "inputs": inputs.clone(),
            "conditioning": [c.clone() for c in conditionings],
            "logits": logits.clone(),
            "greedy_grid": greedy.clone(),
            "greedy_sequence": greedy.reshape(BATCH, -1)[:, order].clone(),
            "sequence_ordering": order,
        }
        manifest_configs[name] = {
            "checkpoint": file_name,
            "checkpoint_format": "state_dict" if config["bare"] else "ddp_trainer",
            "seed": seed,
            "conditioning_type": config["conditioning_type"],
            "variables": copy.deepcopy(config["variables"]),
            "options": config["options"],
        }
        size = (args.out / file_name).stat().st_size
        print(f"{name}: seed {seed}, {sum(p.numel() for p in network.parameters())} parameters, {size} bytes")
    torch.save(io, args.out / "performer_io.pt")
    manifest = {
        "generator": "tools/original_golden/performer_golden.py",
        "versions": {
            package: version(package)
            for package in ("torch", "performer-pytorch", "local-attention", "monai", "numpy", "einops")
        },
        "grid": list(GRID),
        "vocab_size": VOCAB,
        "batch": BATCH,
        "ordering": {k: [list(a) for a in v] if isinstance(v, tuple) and v and isinstance(v[0], tuple) else v
                     for k, v in ORDERING.items()},
        "io": "performer_io.pt",
        "configs": manifest_configs,
    }
    (args.out / "performer_manifest.json").write_text(json.dumps(manifest, indent=1, default=list) + "\n")


if __name__ == "__main__":
    main()
