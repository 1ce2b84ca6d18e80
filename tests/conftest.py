"""Shared fixtures: run the CLI in-process, add a plugin for one test, write tiny token grids, a toy run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _toy_plugin import ToyPlugin, recipe_text

from brainsynth import cli
from brainsynth.core import plugins

os.environ.setdefault("OMP_NUM_THREADS", "2")


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def run_cli(capsys):
    """Call ``brainsynth ARGS`` in this process; returns exit code, stdout and stderr."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def extra_plugin():
    """Register plugin objects with the process's plugin manager for one test."""
    pm = plugins.plugin_manager()
    added = []

    def add(plugin: object, name: str) -> None:
        pm.register(plugin, name=name)
        added.append(plugin)
        plugins.registry.cache_clear()

    yield add
    for plugin in added:
        pm.unregister(plugin)
    plugins.registry.cache_clear()


def write_token_grids(folder: Path, count: int = 6, grid=(3, 4, 2), num_embeddings: int = 16, seed: int = 0) -> Path:
    """Token grids as ``extract`` writes them: uint16 ``.npy`` files plus ``tokens.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.save(folder / f"subject{i:02d}.npy", rng.integers(0, num_embeddings, grid).astype(np.uint16))
    (folder / "tokens.json").write_text(json.dumps({"num_embeddings": num_embeddings, "grid": list(grid)}))
    return folder


@pytest.fixture
def token_grids(tmp_path) -> Path:
    return write_token_grids(tmp_path / "tokens")


@pytest.fixture
def toy(extra_plugin):
    """The toy plugin (tests/_toy_plugin.py) registered for one test."""
    extra_plugin(ToyPlugin, "toy-dist:toy")


@pytest.fixture
def trained(toy, run_cli, tmp_path, token_grids):
    """A finished one-epoch toy run: (recipe path, run directory)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    return recipe, tmp_path / "runs" / "toy"


def one_line_error(result) -> str:
    """The CLI refused with exit 2 and exactly one 'error: ...' line, no traceback; returns that line."""
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err
    return result.err
