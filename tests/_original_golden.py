"""Helpers of the tests against the original BrainSynth priors: their golden files and one thread.

The files in ``tests/data/original_priors`` come from ``tools/original_golden/*_golden.py``. Import
the fixture into a test module (``from _original_golden import one_thread``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data" / "original_priors"


def load_manifest(network: str) -> dict:
    """``<network>_manifest.json``: grid, vocabulary, ordering, io file and configurations."""
    return json.loads((DATA / f"{network}_manifest.json").read_text())


def load_io(manifest: dict) -> dict:
    """The original's inputs and outputs of every configuration (the manifest's ``io`` file)."""
    return torch.load(DATA / manifest["io"], weights_only=True)


def golden_state(config: dict, trainer: bool = False) -> dict[str, torch.Tensor]:
    """The network's state dict from a configuration's golden checkpoint, in either of the original's
    two forms: a bare ``state_dict``, or the DDP trainer's ``{"network": {"module.<key>": ...}}``
    with the ``module.`` prefix stripped (``trainer``: which must also hold the optimizer, scheduler
    and trainer state)."""
    payload = torch.load(DATA / config["checkpoint"], weights_only=True)
    if config["checkpoint_format"] == "state_dict":
        assert not any(k.startswith("module.") for k in payload)
        return payload
    assert config["checkpoint_format"] == "ddp_trainer"
    if trainer:
        assert set(payload) >= {"network", "optimizer", "lr_scheduler", "trainer"}
    return {k.removeprefix("module."): v for k, v in payload["network"].items()}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: single-position steps are too small to split, and on the shared test machine
    extra intra-op threads only wait."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
