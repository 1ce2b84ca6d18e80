"""A plugin filter that names nothing installed, and a checkpoint that holds code, are refused clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from brainsynth.core import plugins
from brainsynth.core.checkpoint import read_checkpoint
from brainsynth.core.errors import CheckpointError, RegistryError


@pytest.fixture
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def test_load_plugins_naming_nothing_installed_is_refused(monkeypatch, fresh_plugins):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "taskz")
    with pytest.raises(RegistryError) as info:
        plugins.plugin_manager()
    message = str(info.value)
    assert "BRAINSYNTH_LOAD_PLUGINS" in message and "'taskz'" in message
    assert "tasks" in message and "datasets" in message  # what is installed


def test_load_plugins_with_one_unknown_name_is_refused(monkeypatch, fresh_plugins):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tasks,nosuch")
    with pytest.raises(RegistryError, match="'nosuch'"):
        plugins.plugin_manager()


def test_load_plugins_naming_nothing_is_one_line_exit_2(tmp_path):
    env = {**__import__("os").environ, plugins.LOAD_PLUGINS_ENV: "nothing-here"}
    result = subprocess.run([sys.executable, "-m", "brainsynth", "plugins"], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "'nothing-here'" in result.stderr and "Traceback" not in result.stderr


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_checkpoint_holding_code_is_refused_in_our_words(tmp_path):
    torch.save({"format": "brainsynth-checkpoint", "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "holds code" in message and "was not loaded" in message and str(tmp_path / "evil.pt") in message
    assert "weights_only" not in message and "Weights only" not in message
    assert "\n" not in message
