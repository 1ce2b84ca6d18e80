"""Reading a checkpoint file written by the original BrainSynth code, without unpickling code.

The original saves either a training dict (``network``, ``optimizer``, ``lr_scheduler``,
``trainer`` and, with a discriminator, ``d_network`` ...; reference §1.1) or, at the end of
training, a bare ``state_dict`` (with a ``module.`` prefix under DDP). Both are plain tensors,
numbers and lists, so ``torch.load(weights_only=True)`` reads them. Numpy scalars and dtypes are
the only pickled non-tensor objects such a file may carry (an ignite or numpy value that slipped
into a state dict); they are pure data and are allowed by name. Anything else is refused, named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from brainsynth.core.checkpoint import FORMAT
from brainsynth.core.errors import CheckpointError


def _numpy_data_globals() -> dict[str, object]:
    """Pickle names of numpy's scalar/dtype reconstructors, under numpy 1.x and 2.x spellings."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    allowed: dict[str, object] = {
        "numpy.core.multiarray.scalar": scalar,
        "numpy._core.multiarray.scalar": scalar,
        "numpy.dtype": np.dtype,
    }
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            allowed[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return allowed


@dataclasses.dataclass
class OriginalCheckpoint:
    """The network weights found in an original file, and what else the file held."""

    path: Path
    state: dict[str, torch.Tensor]
    form: str
    """``training dict`` or ``bare state_dict``."""
    other_entries: list[str]
    """Top-level entries of a training dict that are not imported (optimizer, trainer, ...)."""
    allowed_globals: list[str]
    """Pickled non-tensor objects the file needed (numpy scalars/dtypes only)."""


_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("baseline_vqvae", ("encoder.0.", "decoder.0.", "quantizer.0.impl.")),
    ("performer", ("performer.",)),
    ("xtransformer", ("attn_layers.",)),
)
"""Which original network a state dict belongs to, by the prefixes of its keys (DDP prefix stripped)."""


def original_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """``baseline_vqvae``, ``performer``, ``xtransformer``, or None for a state dict of none of them."""
    keys = [key[len("module."):] if key.startswith("module.") else key for key in state]
    for kind, prefixes in _KINDS:
        if any(key.startswith(prefixes) for key in keys):
            return kind
    return None


def load_original(path: str | Path) -> OriginalCheckpoint:
    """Read an original checkpoint safely; a brainsynth or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; give the original BrainSynth checkpoint (.pt).")
    payload, allowed = _safe_load(path)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        raise CheckpointError(f"{path}: already a brainsynth checkpoint; use it directly (no import needed).")
    if isinstance(payload, Mapping) and isinstance(payload.get("network"), Mapping):
        state, form = payload["network"], "training dict"
        others = [str(k) for k in payload if k != "network"]
    elif isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state, form, others = payload, "bare state_dict", []
    else:
        shown = ", ".join(map(str, list(payload)[:6])) if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint of the original BrainSynth (expected a training dict with a 'network' "
            f"entry, or a state_dict of tensors; found {shown or 'an empty mapping'})."
        )
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the network entry '{bad[0]}' is not a tensor; the file is not a state dict.")
    return OriginalCheckpoint(path, {str(k): v for k, v in state.items()}, form, others, allowed)


def _safe_load(path: Path) -> tuple[object, list[str]]:
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
        ) from None
    known = _numpy_data_globals()
    refused = [name for name in needed if name not in known]
    if refused:
        raise CheckpointError(
            f"{path}: the file needs pickled Python objects ({', '.join(refused)}); brainsynth loads "
            f"checkpoints with weights_only=True and never runs pickled code. Re-save the original's "
            f"network as a plain state_dict (torch.save(checkpoint['network'], 'weights.pt')) and import that."
        )
    # the dtype classes a numpy scalar refers to are not listed by torch's scan; allow them all with it
    allowed = [(obj, name) for name, obj in known.items()] if needed else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True), list(needed)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). The file may be "
            f"truncated; copy it again."
        ) from None
