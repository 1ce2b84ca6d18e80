"""What the golden scripts next to this file share: the published ordering, the conditioning
variables and values, the command line, the seeding, the parameter randomisation, the two
checkpoint forms of the original trainer and the manifest.

The scripts import it as ``golden_common``: run as ``python tools/original_golden/<name>_golden.py``,
Python puts this folder first on ``sys.path``. Like the scripts, it never imports brainsynth.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ORDERING = dict(
    ordering_type="raster_scan",
    reflected_spatial_dims=(False, False, False),
    transpositions_axes=((2, 0, 1),),
    rot90_axes=((0, 1),),
    transformation_order=("rotate_90", "transpose"),
)
"""The published UKB/ADNI ordering (reference §4.7)."""
BATCH = 2
"""Batch of the teacher-forcing inputs, the conditioning values and the greedy samples."""

CONTINUOUS_4 = [{"column": f"c{i}", "kind": "continuous"} for i in range(4)]
"""Four continuous conditioning variables (the published style)."""
MIXED_3 = [
    {"column": "c0", "kind": "continuous"},
    {"column": "group", "kind": "categorical", "levels": 3},
    {"column": "c2", "kind": "continuous"},
]
"""Continuous, categorical (3 levels), continuous."""


def command_line(description: str) -> argparse.Namespace:
    """``--original`` and ``--out`` parsed; the original checkout first on ``sys.path`` (its code is
    imported as ``src.…``), the output folder made, and torch on one thread."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--original", required=True, type=Path, help="checkout of github.com/AmigoLab/BrainSynth")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.original.resolve()))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    return args


def seeded_attempts(index: int, attempts: int) -> Iterator[tuple[int, torch.Generator]]:
    """Seeds ``1000 * index``, ``1000 * index + 1``, ... (``attempts`` of them): each sets torch's
    global seed and comes with a generator seeded alike, as ``(seed, generator)``."""
    for attempt in range(attempts):
        seed = 1000 * index + attempt
        torch.manual_seed(seed)
        yield seed, torch.Generator().manual_seed(seed)


@torch.no_grad()
def randomise_parameters(
    network: torch.nn.Module,
    generator: torch.Generator,
    fan_in: Callable[[torch.Tensor], int],
    scalar_gain: float | None = None,
) -> None:
    """Every parameter gets random values: gains (``.g``, 1-d ``weight``) near 1 (times
    ``scalar_gain`` for a ``.g`` of shape (1,) when given), other 1-d parameters around 0, and
    matrices scaled by ``fan_in(parameter) ** -0.5`` so activations stay well scaled."""
    for name, parameter in network.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if name.endswith(".g") and scalar_gain is not None and parameter.shape == (1,):
            parameter.copy_(scalar_gain * (1.0 + 0.3 * noise))
        elif name.endswith(".g") or (parameter.ndim == 1 and name.endswith("weight")):
            parameter.copy_(1.0 + 0.3 * noise)
        elif parameter.ndim == 1:
            parameter.copy_(0.5 * noise)
        else:
            parameter.copy_(noise / fan_in(parameter) ** 0.5 * 1.5)


def teacher_forcing_inputs(vocab: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """[B, length]: BOS (= ``vocab``) then ``length - 1`` random codes below ``vocab``."""
    tokens = torch.randint(0, vocab, (BATCH, length - 1), generator=generator)
    return torch.cat([torch.full((BATCH, 1), vocab), tokens], dim=1)


def conditioning_values(variables: list[dict], generator: torch.Generator) -> list[torch.Tensor]:
    """The original's per-variable [B, 1] tensors: float for continuous, long codes for categorical."""
    values = []
    for v in variables:
        if v["kind"] == "categorical":
            values.append(torch.randint(0, v["levels"], (BATCH, 1), generator=generator))
        else:
            values.append(torch.randn(BATCH, 1, generator=generator))
    return values


def training_state(network: torch.nn.Module) -> dict:
    """The rest of what the original's CheckpointSaver wrote: optimizer, scheduler, trainer."""
    optimizer = torch.optim.Adam(network.parameters(), lr=5e-4)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999)
    return {
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "trainer": {"epoch_length": 10, "max_epochs": 500, "iteration": 30},
    }


def save_checkpoint(path: Path, state: dict, bare: bool, clone: bool, trained: torch.nn.Module | None = None) -> None:
    """``state`` as the original trainer saved it under DDP, ``{"network": {"module.<key>": ...}}``
    (plus :func:`training_state` of ``trained`` when given), or, ``bare``, as the plain state dict.
    ``clone``: every tensor copied first (tensors sharing storage are then saved apart)."""
    if bare:
        checkpoint = {k: v.clone() for k, v in state.items()} if clone else dict(state)
    else:
        checkpoint = {"network": {f"module.{k}": v.clone() if clone else v for k, v in state.items()}}
        if trained is not None:
            checkpoint.update(training_state(trained))
    torch.save(checkpoint, path)


def manifest_entry(config: dict, file_name: str, seed: int) -> dict:
    """One configuration in the manifest: checkpoint file and form, seed, conditioning, options."""
    return {
        "checkpoint": file_name,
        "checkpoint_format": "state_dict" if config.get("bare") else "ddp_trainer",
        "seed": seed,
        "conditioning_type": config["conditioning_type"],
        "variables": copy.deepcopy(config["variables"]),
        "options": config["options"],
    }


def write_manifest(
    path: Path,
    generator: str,
    packages: tuple[str, ...],
    grid: tuple[int, ...],
    vocab: int,
    io: str,
    configs: dict,
    indent: int | None = None,
) -> None:
    """The manifest: generating script, versions of ``packages``, grid, vocabulary, batch, ordering,
    io file name and the configurations (:func:`manifest_entry`)."""
    from importlib.metadata import version

    manifest = {
        "generator": generator,
        "versions": {package: version(package) for package in packages},
        "grid": list(grid),
        "vocab_size": vocab,
        "batch": BATCH,
        "ordering": {k: [list(a) for a in v] if isinstance(v, tuple) and v and isinstance(v[0], tuple) else v
                     for k, v in ORDERING.items()},
        "io": io,
        "configs": configs,
    }
    path.write_text(json.dumps(manifest, indent=indent, default=list) + "\n")
