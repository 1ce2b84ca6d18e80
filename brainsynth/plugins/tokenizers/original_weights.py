"""Key mapping from the original BrainSynth ``baseline_vqvae`` state dict to `BaselineVQVAE`.

The original wraps its single encoder, decoder and quantiser in per-level lists
(``encoder.0.<i>``, ``quantizer.0.impl.*``); ours has one of each (``encoder.<i>``,
``codebook.*``). Inside, layer indices are identical, so the mapping is a prefix rename.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from brainsynth.core.errors import CheckpointError

_QUANTIZER_KEYS = {
    "embedding.weight": "codebook.embedding.weight",
    "N": "codebook.cluster_size",
    "embed_avg": "codebook.embed_avg",
    "weight": None,  # the original registers the code vectors a second time under this name
}


def original_key(key: str) -> str | None:
    """Our name for one original key (None: the key has no counterpart and is dropped)."""
    if key.startswith("module."):
        key = key[len("module.") :]
    for part in ("encoder", "decoder"):
        prefix = f"{part}.0."
        if key.startswith(prefix):
            return f"{part}.{key[len(prefix):]}"
    prefix = "quantizer.0.impl."
    if key.startswith(prefix) and key[len(prefix) :] in _QUANTIZER_KEYS:
        return _QUANTIZER_KEYS[key[len(prefix) :]]
    raise CheckpointError(
        f"'{key}' is not a key of the original baseline_vqvae (expected encoder.0.*, decoder.0.* or "
        f"quantizer.0.impl.*). Is this checkpoint from a hierarchical or 'single' VQ-VAE?"
    )


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original ``network`` state dict renamed for ``BaselineVQVAE.load_state_dict(strict=True)``."""
    converted = {}
    for key, value in state.items():
        name = original_key(key)
        if name is not None:
            converted[name] = value
    return converted
