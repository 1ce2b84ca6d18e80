"""The third-party plugin package in examples/, installed with pip and found through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_token_grids

pytestmark = pytest.mark.slow  # subprocesses / several processes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "brainsynth-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment where the example package is pip-installed (into its own target folder)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def brainsynth(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "brainsynth", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_listed_by_brainsynth_plugins(plugin_env):
    result = brainsynth(plugin_env, "plugins")
    assert result.returncode == 0, result.stderr
    assert "reverse_raster" in result.stdout
    assert "gru_prior" in result.stdout
    assert "brainsynth-example-plugin (example)" in result.stdout
    assert brainsynth(plugin_env, "example-hello").stdout.strip() == "hello from brainsynth-example-plugin"


def test_not_present_without_installation():
    result = subprocess.run([sys.executable, "-m", "brainsynth", "plugins"], capture_output=True, text=True)
    assert result.returncode == 0 and "gru_prior" not in result.stdout


def test_used_by_a_recipe(plugin_env, tmp_path):
    tokens = write_token_grids(tmp_path / "tokens")
    recipe = tmp_path / "plugin.yaml"
    recipe.write_text(
        "task: transformer\n"
        f"experiment: {{name: with_plugin, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: tokens, train: {tokens}, val: {tokens}}}\n"
        "ordering: {name: reverse_raster}\n"
        "network: {name: gru_prior, dim: 16}\n"
        "train: {epochs: 1, batch_size: 2}\n"
    )
    result = brainsynth(plugin_env, "run", str(recipe))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "with_plugin" / "checkpoints" / "last.pt").is_file()
    shown = brainsynth(plugin_env, "validate", str(recipe), "--show")
    assert "network: {name: gru_prior, dim: 16, layers: 1, dropout: 0.0}" in shown.stdout
