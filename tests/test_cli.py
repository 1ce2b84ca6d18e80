"""The command line: exit codes, one-line user errors, --debug, runs and their directories."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _toy_plugin import recipe_text

from brainsynth.core.run_log import read_metrics


@pytest.mark.slow
def test_version_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "brainsynth", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "brainsynth, version" in result.stdout


@pytest.mark.slow  # three subprocesses that import every plugin
def test_version_loads_no_plugin_and_plugin_commands_are_found_when_asked_for():
    """--version costs no plugin import (torch, MONAI: seconds of CPU); a plugin's command and
    --help still find the plugins."""
    probe = (
        "import sys\n"
        "from brainsynth.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'brainsynth.plugins.compat' in sys.modules)\n"
    )
    def loaded(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        return done.stdout.strip().splitlines()[-1]

    assert loaded("--version") == "False False"
    assert loaded("import-checkpoint", "--help") == "False True"  # plugins load; components and torch do not
    assert loaded("--help") == "False True"


def test_validate_ok_and_show(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    result = run_cli("validate", str(recipe))
    assert result.code == 0 and "valid (task transformer, mode train)" in result.out
    shown = run_cli("validate", str(recipe), "--show", "--set", "network.dim=4")
    assert shown.code == 0
    assert "network: {name: bigram, dim: 4}" in shown.out
    assert "schedule: {name: constant}" in shown.out


def test_user_error_is_one_line_exit_2(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs").replace("dim: 8", "dimm: 8"))
    result = run_cli("validate", str(recipe))
    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("error: ")
    assert f"{recipe}:6: network.dimm: unknown key" in result.err and "Traceback" not in result.err


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: transformer\nexperiment: {name: x}\ntrian: {epochs: 1}\n")
    plain = subprocess.run([sys.executable, "-m", "brainsynth", "validate", str(recipe)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert f"{recipe}:3: trian: unknown key for task 'transformer'. Did you mean 'train'?" in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "brainsynth", "--debug", "validate", str(recipe)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RecipeError" in debug.stderr


def test_usage_errors_exit_2(run_cli, tmp_path):
    assert run_cli("frobnicate").code == 2
    assert run_cli("validate", str(tmp_path / "absent.yaml")).code == 2
    assert run_cli("plugins", "--kind", "network").code == 2


def test_run_creates_directory_logs_and_checkpoints(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    result = run_cli("run", str(recipe))
    assert result.code == 0, result
    run_dir = tmp_path / "runs" / "toy"
    assert f"done: results in {run_dir}" in result.out
    assert (run_dir / "recipe.yaml").read_text().startswith("task: transformer")
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert list((run_dir / "logs").glob("events.out.tfevents.*"))
    records = read_metrics(run_dir / "logs" / "metrics.jsonl")
    assert {r["split"] for r in records} == {"train", "val"} and all("ce" in r for r in records)
    # progress shows as plain lines when stderr is not a terminal
    assert "epoch 2/2: 3/3 (100%)" in result.err
    final = json.loads((run_dir / "metrics.train.json").read_text())
    assert final["epoch"] == 2 and final["val_ce"] > 0


def test_existing_run_is_never_overwritten(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    assert run_cli("run", str(recipe)).code == 0
    checkpoint = tmp_path / "runs" / "toy" / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    again = run_cli("run", str(recipe))
    assert again.code == 2 and "already exists. Pass --resume" in again.err
    assert checkpoint.read_bytes() == before
    missing = run_cli("run", str(recipe), "--resume", "--set", "experiment.name=other")
    assert missing.code == 2 and "does not exist" in missing.err


def test_seeded_runs_are_reproducible_and_resume_continues(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=4))
    assert run_cli("run", str(recipe), "--set", "experiment.name=a").code == 0
    assert run_cli("run", str(recipe), "--set", "experiment.name=b").code == 0
    a = json.loads((tmp_path / "runs" / "a" / "metrics.train.json").read_text())
    b = json.loads((tmp_path / "runs" / "b" / "metrics.train.json").read_text())
    assert a == b
    assert run_cli("run", str(recipe), "--set", "experiment.name=c", "--set", "train.epochs=2").code == 0
    resumed = run_cli("run", str(recipe), "--set", "experiment.name=c", "--resume")
    assert resumed.code == 0 and "resumed from" in resumed.out
    c = json.loads((tmp_path / "runs" / "c" / "metrics.train.json").read_text())
    assert c == a


def test_failed_run_leaves_nothing_behind(toy, run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(empty, tmp_path / "runs"))
    result = run_cli("run", str(recipe))
    assert result.code == 2 and "no .npy token grids" in result.err
    assert not (tmp_path / "runs" / "toy").exists()


def test_out_of_range_token_names_the_file(toy, run_cli, tmp_path, token_grids):
    import numpy as np

    np.save(token_grids / "subject00.npy", np.full((3, 4, 2), 99, dtype=np.uint16))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    result = run_cli("run", str(recipe))
    assert result.code == 2 and "subject00.npy: token 99 is outside the codebook [0, 16)" in result.err


def test_mixed_precision_runs_on_cpu(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    result = run_cli("run", str(recipe), "--set", "precision=bf16")
    assert result.code == 0, result
    final = json.loads((tmp_path / "runs" / "toy" / "metrics.train.json").read_text())
    assert final["train_ce"] > 0
