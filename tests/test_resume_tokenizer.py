"""Exact resume of the tokenizer stage: SIGKILL a run at a random step, --resume, compare bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from _kill import run_and_kill

from brainsynth.core.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow  # subprocesses / several processes


def recipe(cohort, train, root, name: str) -> str:
    """4 volumes, batch 1: 4 iterations per epoch, 3 epochs; last.pt every 3 iterations, so
    checkpoints fall mid-epoch as well as at epoch ends. Adversarial + adaptive weight on."""
    return (
        "task: tokenizer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        "seed: 5\n"
        "device: cpu\n"
        f"data: {{name: nifti, train: {train}, val: {cohort / 'val.tsv'}, roi: [24, 24, 24], cache: memory}}\n"
        "network: {name: baseline_vqvae, channels: 4, levels: 2, num_res_layers: 1, embedding_dim: 4,\n"
        "          codebook: {name: ema, num_embeddings: 16, decay: 0.5, dead_code_restart: true, restart_every: 5}}\n"
        "loss: {name: mse}\n"
        "discriminator: {name: baseline_discriminator, channels: 4, num_layers: 2, norm: none}\n"
        "adversarial: {weight: 0.1, adaptive: true, warmup_epochs: 1}\n"
        "metrics: [{name: mae}]\n"
        "train: {epochs: 3, batch_size: 1, log_every: 1, checkpoint_every: 3, eval_every: 1, best_metric: mae}\n"
    )


def test_killed_run_resumes_bit_identical(tmp_path, tiny_cohort, run_cli):  # noqa: F811
    images = sorted((tiny_cohort / "images").glob("*.nii.gz"))[:4]
    train = tmp_path / "four.tsv"
    train.write_text("path\n" + "".join(f"{image}\n" for image in images))
    path = tmp_path / "tok.yaml"
    path.write_text(recipe(tiny_cohort, train, tmp_path / "runs", "through"))
    assert run_cli("run", str(path)).code == 0

    # The same run in its own process, killed (SIGKILL) at a random step after its first checkpoint.
    kill_at = random.Random().randint(4, 10)
    killed = tmp_path / "runs" / "killed"
    run_and_kill(path, killed, kill_at, "--set", "experiment.name=killed")
    saved = read_checkpoint(killed / "checkpoints" / "last.pt")
    assert 3 <= saved["step"] < 12

    result = run_cli("run", str(path), "--set", "experiment.name=killed", "--resume")
    assert result.code == 0, result
    assert f"(step {saved['step']})" in result.out

    a = read_checkpoint(tmp_path / "runs" / "through" / "checkpoints" / "last.pt")
    b = read_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 12
    for name in ("network", "discriminator"):
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), f"killed at step {kill_at}: {name}.{key} differs"
        for index, state in a["optimizers"][name]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b["optimizers"][name]["state"][index][key]), f"{name} optimizer {index}.{key}"
    assert a["extra"]["best"] == b["extra"]["best"]
    assert not list((killed / "checkpoints").glob(".*.tmp-*"))
