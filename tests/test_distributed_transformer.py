"""The prior under DDP (2 gloo processes) and its exact resume after a SIGKILL."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _kill import run_and_kill
from conftest import write_token_grids

from brainsynth.core.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow  # subprocesses / several processes


def recipe(
    tokens: Path, table: Path, root: Path, name: str, *, batch_size: int, epochs: int = 1, extra: str = "",
    conditioning: str = "",
) -> str:
    """A tiny conditioned prior, dropout off, SGD with momentum (so the optimizer has state)."""
    return (
        "task: transformer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        "seed: 3\n"
        "device: cpu\n"
        f"data: {{name: tokens, train: {tokens / 'train'}, val: {tokens / 'val'}}}\n"
        f"conditioning: {{name: cross_attend, table: {table}, variables: [{{column: age}}]{conditioning}}}\n"
        "network: {name: xtransformer, dim: 16, depth: 2, heads: 2, attn_dim_head: 8}\n"
        "optimizer: {name: sgd, lr: 0.1, momentum: 0.9}\n"
        f"train: {{epochs: {epochs}, batch_size: {batch_size}, log_every: 1{extra}}}\n"
    )


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior_ddp")
    tokens = root / "tokens"
    write_token_grids(tokens / "train", count=4, seed=1)
    write_token_grids(tokens / "val", count=2, seed=2)
    table = root / "table.tsv"
    rows = [f"subject{i:02d}\t{40 + 7 * i}" for i in range(4)]
    table.write_text("subject\tage\n" + "\n".join(rows) + "\n")
    return tokens, table


def test_two_ranks_of_batch_2_train_like_one_rank_of_batch_4(tmp_path, token_data, run_cli):
    tokens, table = token_data
    path = tmp_path / "prior.yaml"
    path.write_text(recipe(tokens, table, tmp_path / "runs", "single", batch_size=4))
    assert run_cli("run", str(path)).code == 0
    command = [sys.executable, "-m", "brainsynth", "run", str(path), "--nproc-per-node", "2",
               "--set", "experiment.name=ddp", "--set", "train.batch_size=2", "--set", "zero=true"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = read_checkpoint(tmp_path / "runs" / "single" / "checkpoints" / "last.pt")
    ddp = read_checkpoint(tmp_path / "runs" / "ddp" / "checkpoints" / "last.pt")
    assert single["step"] == ddp["step"] == 1 and ddp["extra"]["world_size"] == 2
    for key, value in single["modules"]["network"].items():
        torch.testing.assert_close(ddp["modules"]["network"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the saved run keeps what sampling needs, whichever rank count trained it
    assert ddp["extra"]["conditioning"] == single["extra"]["conditioning"]


@pytest.mark.parametrize("conditioning", ["", ", dropout: 0.5"], ids=["plain", "conditioning_dropout"])
def test_killed_prior_resumes_bit_identical(tmp_path, token_data, run_cli, conditioning):
    tokens, table = token_data
    path = tmp_path / "prior.yaml"
    # 4 subjects, batch 1: 4 iterations per epoch, 5 epochs; last.pt every 3 iterations (mid-epoch too).
    # With conditioning dropout the null masks come from torch's RNG, which the checkpoint restores.
    path.write_text(recipe(tokens, table, tmp_path / "runs", "through", batch_size=1, epochs=5,
                           extra=", checkpoint_every: 3", conditioning=conditioning))
    assert run_cli("run", str(path)).code == 0

    kill_at = random.Random().randint(4, 10)
    killed = tmp_path / "runs" / "killed"
    run_and_kill(path, killed, kill_at, "--set", "experiment.name=killed")
    saved = read_checkpoint(killed / "checkpoints" / "last.pt")
    assert 3 <= saved["step"] < 20

    result = run_cli("run", str(path), "--set", "experiment.name=killed", "--resume")
    assert result.code == 0, result
    a = read_checkpoint(tmp_path / "runs" / "through" / "checkpoints" / "last.pt")
    b = read_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 20
    assert ("conditioning.embed.null" in a["modules"]["network"]) == bool(conditioning)
    for key, value in a["modules"]["network"].items():
        assert torch.equal(value, b["modules"]["network"][key]), f"killed at step {kill_at}: {key} differs"
    for index, state in a["optimizers"]["network"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizers"]["network"]["state"][index][key]), f"optimizer {index}.{key}"
    assert a["extra"]["best"] == b["extra"]["best"]
