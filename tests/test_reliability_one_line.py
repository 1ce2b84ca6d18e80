"""Failures a user can cause end in one line, exit 2, no traceback, and leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from _toy_plugin import recipe_text
from conftest import one_line_error, write_token_grids



def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_empty_checkpoint_is_one_line(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    last = tmp_path / "runs" / "toy" / "checkpoints" / "last.pt"
    last.write_bytes(b"")
    before = tree(tmp_path / "runs")
    err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2"))
    assert str(last) in err and "empty" in err
    assert tree(tmp_path / "runs") == before


def test_empty_checkpoint_is_a_checkpoint_error(tmp_path):
    from brainsynth.core.checkpoint import read_checkpoint
    from brainsynth.core.errors import CheckpointError

    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")


def _unwritable_root(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; /sys refuses new entries even to root
        return "/sys/brainsynth-reliability-test/runs"
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "runs")


def test_unwritable_run_root_is_one_line(toy, run_cli, tmp_path, token_grids):
    root = _unwritable_root(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, root))
    err = one_line_error(run_cli("run", str(recipe)))
    assert "cannot" in err and "experiment.root" in err


def test_unwritable_output_folder_inside_a_run_is_one_line(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    logs = tmp_path / "runs" / "toy" / "logs"
    for item in logs.iterdir():
        item.unlink()
    logs.rmdir()
    logs.write_text("a file where the logs folder goes")
    err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2"))
    assert str(logs) in err and "writable" in err


def test_file_as_experiment_root_is_one_line(toy, run_cli, tmp_path, token_grids):
    root = tmp_path / "not-a-folder"
    root.write_text("keep me")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, root))
    err = one_line_error(run_cli("run", str(recipe)))
    assert str(root) in err and "experiment.root" in err and "not a folder" in err
    assert root.read_text() == "keep me"


def test_token_grids_of_mixed_shapes_are_one_line(toy, run_cli, tmp_path):
    tokens = write_token_grids(tmp_path / "tokens", count=4, grid=(3, 4, 2))
    np.save(tokens / "subject99.npy", np.zeros((5, 5, 5), dtype=np.uint16))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tokens, tmp_path / "runs"))
    err = one_line_error(run_cli("run", str(recipe)))
    assert "subject99.npy" in err and "[5, 5, 5]" in err and "[3, 4, 2]" in err
    assert not (tmp_path / "runs" / "toy").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback_of_an_os_error(tmp_path, token_grids):
    """The CLI in a fresh process (the toy plugin is not installed there): a file as experiment.root."""
    root = tmp_path / "file-root"
    root.write_text("")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"task: transformer\nexperiment: {{name: x, root: {root}}}\n"
        f"data: {{name: tokens, train: {token_grids}}}\nnetwork: {{name: xtransformer, dim: 8, depth: 1, heads: 1}}\n"
    )
    plain = subprocess.run([sys.executable, "-m", "brainsynth", "run", str(recipe)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr, plain.stderr
    debug = subprocess.run([sys.executable, "-m", "brainsynth", "--debug", "run", str(recipe)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
