"""One save/load pair for the full training state.

A checkpoint holds everything needed to continue bit-for-bit on CPU: module state_dicts,
optimizers, schedulers, grad scalers, the RNG states of python/numpy/torch, epoch and step, and
the resolved recipe text. It is written to a temporary file in the same folder and renamed, so
an interrupted write never damages the previous checkpoint, and read back with
``torch.load(weights_only=True)``, so loading never runs pickled code.

A save may keep the file it replaces as ``previous`` (training keeps ``previous.pt`` beside
``last.pt``): a last checkpoint damaged after it was written (a disk error, a bad copy) then
leaves the one before it to resume from.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .kinds import canonical
from .files import named, temporary_path

FORMAT = "brainsynth-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy and torch in types ``weights_only`` loading accepts."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def shapes_of(modules: Mapping[str, torch.nn.Module]) -> dict[str, dict[str, list[int]]]:
    """Module name -> parameter/buffer name -> shape: the identity a checkpoint is checked against."""
    return {
        name: {key: list(value.shape) for key, value in module.state_dict().items()}
        for name, module in modules.items()
    }


def save_checkpoint(
    path: str | Path,
    *,
    task: str,
    recipe: str,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scalers: Mapping[str, Any] | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: Mapping[str, Any] | None = None,
    rng: Sequence[Mapping[str, Any]] | None = None,
    previous: str | Path | None = None,
) -> Path:
    """Write the full state atomically; the previous file at `path` survives any interruption.

    `rng` holds the RNG states of every rank in rank order (default: this process's alone), so
    that each rank of a resumed distributed run continues its own random stream. With
    `previous`, the file at `path` becomes `previous` once the new state is fully written, so at
    every moment `path` holds a whole checkpoint and `previous` the one before it.
    """
    rng = list(rng) if rng is not None else [rng_state()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "recipe": recipe,
        "epoch": int(epoch),
        "step": int(step),
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizers": {name: opt.state_dict() for name, opt in (optimizers or {}).items()},
        "schedulers": {name: s.state_dict() for name, s in (schedulers or {}).items()},
        "scalers": {name: s.state_dict() for name, s in (scalers or {}).items()},
        "rng": rng[0],
        "rng_ranks": rng,
        "extra": dict(extra or {}),
    }
    tmp_name = temporary_path(path)
    try:
        with open(tmp_name, "wb") as handle:
            writer = _WriteErrors(handle)
            try:
                torch.save(payload, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.is_file():
            keep_as(path, Path(previous))
        os.replace(tmp_name, path)
    except OSError as exc:
        tmp_name.unlink(missing_ok=True)
        raise named(exc, path) from exc
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return path


class _WriteErrors:
    """A file handle that keeps the OSError of a failed write (a full disk): torch's writer reports
    it as a RuntimeError about file positions, which would hide the cause from the user."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def keep_as(path: Path, previous: Path) -> None:
    """Make `previous` a second name of the file at `path` (a copy where hard links are refused), atomically."""
    tmp = temporary_path(previous)
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, previous)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_task(recorded: str | None, task: str) -> bool:
    """Whether a checkpoint recorded for task `recorded` belongs to `task` (a task's former name,
    'transformer' for 'prior', names the same task)."""
    return recorded is not None and canonical(recorded) == canonical(task)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a brainsynth checkpoint safely, or say clearly why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found.")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path}: the checkpoint file is empty (0 bytes; its write never finished). Use another "
            f"checkpoint (checkpoints/last.pt or best.pt) or re-create it."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise _unreadable(path, exc) from None
        # torch's message advises reloading with weights_only=False; only its diagnosis is kept.
        found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        diagnosis = found.group(1).strip() if found else ""
        objects = re.search(r"GLOBAL ([\w.]+)", diagnosis)
        if objects or "global" in diagnosis.lower():
            what = f": {objects.group(1)}" if objects else ""
            raise CheckpointError(
                f"{path}: the file holds code (pickled Python objects other than tensors and plain "
                f"data{what}), so it was not loaded: loading it could run that code. Use a checkpoint "
                f"written by brainsynth, or convert an original one with 'brainsynth import-checkpoint'."
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({diagnosis[:200] or 'not a torch file'}). The file may be "
            f"truncated or from another program; use another checkpoint (checkpoints/last.pt or "
            f"best.pt) or re-create it."
        ) from None
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a brainsynth checkpoint. Checkpoints of the original BrainSynth code "
            f"are converted with 'brainsynth import-checkpoint'."
        )
    return payload


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    return CheckpointError(
        f"{path}: not a readable checkpoint ({detail}). The file may be truncated or from another "
        f"program; use another checkpoint (checkpoints/last.pt or best.pt) or re-create it."
    )


def load_checkpoint(
    path: str | Path,
    *,
    task: str,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scalers: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    rank: int = 0,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore the full state into live objects; returns the payload (epoch, step, extra, recipe).

    A checkpoint of another task or with other module shapes is refused with the first
    mismatching key named, before anything is modified. `rank` picks which rank's RNG states to
    restore; a rank the checkpoint has none for (the job grew) keeps its own seeded state.
    `payload` is the file's content when the caller has already read it (`read_checkpoint`).
    """
    payload = dict(payload) if payload is not None else read_checkpoint(path)
    if not same_task(payload["task"], task):
        raise CheckpointError(
            f"{path}: checkpoint of a '{payload['task']}' run, but this recipe's task is '{task}'."
        )
    saved = payload["modules"]
    for name, module in modules.items():
        if name not in saved:
            raise CheckpointError(
                f"{path}: has no '{name}' module (it holds {', '.join(saved) or 'none'}); "
                f"it comes from another kind of run."
            )
        _check_shapes(path, name, saved[name], module.state_dict())
    for name, module in modules.items():
        module.load_state_dict(saved[name])
    for group, live in (("optimizers", optimizers), ("schedulers", schedulers), ("scalers", scalers)):
        for name, obj in (live or {}).items():
            if name in payload[group]:
                try:
                    obj.load_state_dict(payload[group][name])
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise CheckpointError(
                        f"{path}: the saved state of {group[:-1]} '{name}' does not fit this run "
                        f"({str(exc).splitlines()[0][:200]}). It was saved with another optimizer "
                        f"setting; resume with the recipe the run was trained with."
                    ) from None
    if restore_rng:
        states = payload.get("rng_ranks") or [payload["rng"]]
        if rank < len(states):
            set_rng_state(states[rank])
    return payload


def _check_shapes(path: Path, module: str, saved: Mapping, live: Mapping) -> None:
    missing = [k for k in live if k not in saved]
    unexpected = [k for k in saved if k not in live]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{path}: module '{module}' does not match this recipe's model ({detail}). The "
            f"checkpoint comes from another model or configuration; use the recipe it was trained with."
        )
    for key, value in live.items():
        if tuple(saved[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: module '{module}' key '{key}' has shape {list(saved[key].shape)} in the "
                f"checkpoint but {list(value.shape)} in this recipe's model. The checkpoint comes "
                f"from another configuration; use the recipe it was trained with."
            )
