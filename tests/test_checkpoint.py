"""Checkpoints: full-state round trip, safe loading, clear refusals, atomic writes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from brainsynth.core.errors import CheckpointError


def make_state(width: int = 4):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler, scaler


def save(path, model, optimizer, scheduler, scaler, **kw):
    return save_checkpoint(
        path, task="transformer", recipe="task: transformer\n", modules={"network": model},
        optimizers={"network": optimizer}, schedulers={"network": scheduler}, scalers={"network": scaler},
        epoch=kw.get("epoch", 3), step=kw.get("step", 30), extra={"best": 1.5},
    )


def test_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler, scaler = make_state()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save(tmp_path / "last.pt", model, optimizer, scheduler, scaler)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    fresh_model, fresh_opt, fresh_sched, fresh_scaler = make_state()
    with torch.no_grad():
        for p in fresh_model.parameters():
            p.add_(1.0)
    fresh_scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    state = load_checkpoint(
        tmp_path / "last.pt", task="transformer", modules={"network": fresh_model},
        optimizers={"network": fresh_opt}, schedulers={"network": fresh_sched}, scalers={"network": fresh_scaler},
    )
    assert (state["epoch"], state["step"], state["extra"]["best"]) == (3, 30, 1.5)
    assert state["recipe"] == "task: transformer\n"
    for a, b in zip(model.state_dict().values(), fresh_model.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    assert fresh_scaler.get_scale() == 128.0
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpoint_of_another_task_or_shape_is_refused(tmp_path):
    model, optimizer, scheduler, scaler = make_state(width=4)
    save(tmp_path / "last.pt", model, optimizer, scheduler, scaler)
    with pytest.raises(CheckpointError, match="checkpoint of a 'transformer' run, but this recipe's task is 'tokenizer'"):
        load_checkpoint(tmp_path / "last.pt", task="tokenizer", modules={"network": model})
    wider, *_ = make_state(width=8)
    with pytest.raises(CheckpointError, match=r"key '0\.weight' has shape \[4, 3\] in the checkpoint but \[8, 3\]"):
        load_checkpoint(tmp_path / "last.pt", task="transformer", modules={"network": wider})
    with pytest.raises(CheckpointError, match="has no 'discriminator' module"):
        load_checkpoint(tmp_path / "last.pt", task="transformer", modules={"discriminator": model})


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    model, *_ = make_state()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a brainsynth checkpoint"):
        read_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "absent.pt")


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_pickled_objects_are_not_loaded(tmp_path):
    torch.save({"format": "brainsynth-checkpoint", "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds code"):
        read_checkpoint(tmp_path / "evil.pt")


WRITER = r"""
import sys, time, torch
from brainsynth.core.checkpoint import save_checkpoint
big = torch.nn.Linear(4096, 8192)
print("ready", flush=True)
save_checkpoint(sys.argv[1], task="transformer", recipe="big", modules={"network": big})
time.sleep(60)
"""


def kill_mid_write(path) -> bool:
    """Start a large save in another process and SIGKILL it; True if it died mid-write."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in path.parent.glob(".last.pt.tmp-*")):
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return any(path.parent.glob(".last.pt.tmp-*"))


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path):
    model, optimizer, scheduler, scaler = make_state()
    path = tmp_path / "last.pt"
    save(path, model, optimizer, scheduler, scaler)
    before = path.read_bytes()
    for _ in range(3):
        if kill_mid_write(path):
            break
        save(path, model, optimizer, scheduler, scaler)  # the kill came too late: try again
        before = path.read_bytes()
    else:
        pytest.fail("could not interrupt a checkpoint write in three tries")
    assert path.read_bytes() == before
    state = load_checkpoint(path, task="transformer", modules={"network": model})
    assert state["extra"]["best"] == 1.5
