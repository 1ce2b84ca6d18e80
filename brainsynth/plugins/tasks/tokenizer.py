"""The ``tokenizer`` task: train a VQ-VAE, extract token grids, decode them, evaluate reconstructions."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from brainsynth.core import distributed
from brainsynth.core.checkpoint import load_checkpoint, save_checkpoint
from brainsynth.core.errors import DataError, RunError
from brainsynth.core.runner import Run
from brainsynth.core.task import Section, Task
from brainsynth.core.training import (
    BestTracker,
    OptimizerConfig,
    autocast,
    build_optimizer,
    build_scheduler,
    grad_scaler,
)

TOKENS_META = "tokens.json"
DIRECTIONS = {"ms_ssim": "max", "mae": "min", "mse": "min", "psnr": "max"}


@dataclasses.dataclass
class TokenizerTrainConfig:
    """The ``train`` section of a tokenizer recipe."""

    epochs: int = 10
    batch_size: int = 1
    eval_every: int = 1
    """Evaluate on the val split every N epochs."""
    log_every: int = 10
    """Log training losses every N iterations."""
    image_every: int = 1
    """Log mid-slice images every N evaluations."""
    num_workers: int = 0
    best_metric: Literal["ms_ssim", "mae", "mse", "psnr"] = "ms_ssim"
    """The evaluation metric that picks ``best.pt`` (maximised or minimised as it should be)."""


@dataclasses.dataclass
class AdversarialConfig:
    """The ``adversarial`` section: weight and schedule of the generator's adversarial term."""

    weight: float = 0.0
    """0 switches adversarial training off."""
    warmup_epochs: int = 0
    """Epochs over which the weight ramps linearly from 0 to `weight` (0: no ramp)."""
    start_epoch: int = 0
    """Epochs of reconstruction-only training before the adversarial term starts."""
    adaptive: bool = False
    """Scale by VQGAN's adaptive weight (ratio of gradient norms at the decoder's last layer)."""


@dataclasses.dataclass
class OutputsConfig:
    """Where extract, decode and evaluate read from and write to."""

    checkpoint: Literal["best", "last"] = "best"
    splits: list[str] | None = None
    """Splits to extract or evaluate (default: every split of the data)."""
    reconstructions: bool = False
    """extract: also write reconstructions as NIfTI."""
    tokens: str | None = None
    """decode: a folder of ``.npy`` token grids (default: the run's ``tokens/`` folder)."""


def _mid_slices(volume: torch.Tensor) -> np.ndarray:
    """[C, X, Y, Z] -> one [H, W] image of the three central slices side by side, in [0, 1]."""
    v = volume[0].detach().float().cpu().numpy()
    slices = [v[v.shape[0] // 2], v[:, v.shape[1] // 2], v[:, :, v.shape[2] // 2]]
    height = max(s.shape[0] for s in slices)
    padded = [np.pad(s, ((0, height - s.shape[0]), (0, 0))) for s in slices]
    return np.clip(np.concatenate(padded, axis=1), 0, 1)


def _affine(image: torch.Tensor, index: int) -> np.ndarray:
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = affine[index] if affine.dim() == 3 else affine
    return affine.detach().cpu().numpy().astype(np.float64)


def _write_nifti(path: Path, volume: torch.Tensor, affine: np.ndarray) -> None:
    array = volume.detach().float().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), tmp)
    tmp.replace(path)


class TokenizerTask(Task):
    """Train a VQ-VAE tokenizer; extract, decode and evaluate with it."""

    sections = {
        "data": Section(kind="dataset", default="nifti", doc="volumes"),
        "network": Section(kind="tokenizer", required=True, doc="the VQ-VAE"),
        "loss": Section(kind="loss", default="jukebox_perceptual"),
        "discriminator": Section(kind="discriminator", doc="set with adversarial.weight > 0"),
        "adversarial_loss": Section(kind="adversarial_loss", default="least_square"),
        "adversarial": Section(schema=AdversarialConfig),
        "metrics": Section(kind="metric", many=True),
        "optimizer": Section(schema=OptimizerConfig),
        "discriminator_optimizer": Section(schema=OptimizerConfig),
        "train": Section(schema=TokenizerTrainConfig),
        "outputs": Section(schema=OutputsConfig),
    }
    modes = ("train", "extract", "decode", "evaluate")

    def run(self, run: Run) -> dict[str, Any]:
        return getattr(self, run.mode)(run)
