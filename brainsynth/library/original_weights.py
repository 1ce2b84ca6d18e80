"""Key mapping from the original BrainSynth ``baseline_vqvae`` state dict to `BaselineVQVAE`.

The original wraps its single encoder, decoder and quantiser in per-level lists
(``encoder.0.<i>``, ``quantizer.0.impl.*``); ours has one of each (``encoder.<i>``,
``codebook.*``). Inside, layer indices are identical, so the mapping is a prefix rename. Its
quantiser registers the code vectors twice (``impl.weight`` is the very Parameter
``impl.embedding.weight``), so the alias is checked for equality and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from brainsynth.core.errors import CheckpointError

_QUANTIZER_PREFIX = "quantizer.0.impl."
_QUANTIZER_KEYS = {
    "embedding.weight": "codebook.embedding.weight",
    "N": "codebook.cluster_size",
    "embed_avg": "codebook.embed_avg",
    "weight": None,  # the original registers the code vectors a second time under this name
}
_CODE_ALIAS = _QUANTIZER_PREFIX + "weight"
_CODES = _QUANTIZER_PREFIX + "embedding.weight"

TRAINING_COUNTERS = ("codebook.restart_step",)
"""Our buffers the original has no counterpart for; they keep their freshly built value."""


def strip_ddp_prefix(key: str) -> str:
    """``module.encoder...`` (saved from a DistributedDataParallel wrapper) -> ``encoder...``."""
    return key[len("module.") :] if key.startswith("module.") else key


def original_key(key: str) -> str | None:
    """Our name for one original key (None: the key has no counterpart and is dropped)."""
    key = strip_ddp_prefix(key)
    for part in ("encoder", "decoder"):
        prefix = f"{part}.0."
        if key.startswith(prefix):
            return f"{part}.{key[len(prefix):]}"
    if key.startswith(_QUANTIZER_PREFIX) and key[len(_QUANTIZER_PREFIX) :] in _QUANTIZER_KEYS:
        return _QUANTIZER_KEYS[key[len(_QUANTIZER_PREFIX) :]]
    raise CheckpointError(
        f"'{key}' is not a key of the original baseline_vqvae (expected encoder.0.*, decoder.0.* or "
        f"quantizer.0.impl.*). Is this checkpoint from a hierarchical or 'single' VQ-VAE?"
    )


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original ``network`` state dict renamed for ``BaselineVQVAE.load_state_dict(strict=True)``."""
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    stripped = {strip_ddp_prefix(key): value for key, value in state.items()}
    for key, value in state.items():
        name = original_key(key)
        if name is None:
            continue
        if name in converted:
            raise CheckpointError(
                f"'{key}' and '{sources[name]}' are the same original key (one with the DDP 'module.' "
                f"prefix, one without); the file mixes two networks."
            )
        converted[name] = value
        sources[name] = key
    alias = stripped.get(_CODE_ALIAS)
    if alias is not None:
        codes = stripped.get(_CODES)
        if codes is None:
            converted["codebook.embedding.weight"] = alias
        elif not _same(alias, codes):
            raise CheckpointError(
                f"'{_CODE_ALIAS}' and '{_CODES}' differ; in the original they are one tensor, so the "
                f"file was edited or comes from another network."
            )
    return converted


def map_original_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`state` renamed and checked against `expected` (our model's state dict): every key, every shape.

    Every original key must land on one of ours with the same shape, and every one of ours must
    be supplied (except `TRAINING_COUNTERS`); the first key that does not fit is named.
    """
    converted = convert_original_state_dict(state)
    origin = {original_key(k): strip_ddp_prefix(k) for k in state if original_key(k) is not None}
    origin.setdefault("codebook.embedding.weight", _CODE_ALIAS)
    for name, value in converted.items():
        if name not in expected:
            raise CheckpointError(
                f"original key '{origin[name]}' (ours: '{name}') has no place in the network this recipe "
                f"builds. The recipe's network has fewer levels or residual layers, or another codebook, "
                f"than the original run; copy them from its script (brainsynth import-script)."
            )
        if tuple(value.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"original key '{origin[name]}' has shape {list(value.shape)} but the recipe's network "
                f"expects {list(expected[name].shape)} for '{name}'. Set the network's channels, "
                f"embedding_dim, codebook.num_embeddings, levels and up/downsample parameters as in "
                f"the original run (brainsynth import-script converts its flags)."
            )
    missing = [k for k in expected if k not in converted and k not in TRAINING_COUNTERS]
    if missing:
        raise CheckpointError(
            f"the original checkpoint has no value for '{missing[0]}' of the recipe's network"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}. The recipe's network has "
            f"more levels or residual layers (or sub-pixel up-sampling) than the original run."
        )
    return converted


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_meta or b.is_meta:
        return a.shape == b.shape
    return a.shape == b.shape and torch.equal(a, b)
