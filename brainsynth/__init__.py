"""brainsynth: morphology-preserving generative modelling of 3D brain MRI.

What a notebook or a plugin package needs, in one namespace:

* ``brainsynth.load(run_dir)``: a trained tokenizer or prior as a Python object (`api`);
  ``brainsynth.build(kind, block)``: a component by its registered name, as a recipe builds it;
* the contracts a component implements (`Tokenizer`, `Codebook`, `ReconstructionLoss`, `Prior`,
  `Conditioning`, `TokenDecoder`, `Ordering`, `DataSource`, `Task`) and `hookimpl`, the marker of a
  plugin's hooks (docs/plugins.md);
* the errors that end in one line (`BrainsynthError` and its kinds).

Names are imported on first use, so ``import brainsynth`` (and ``brainsynth --version``) costs no
torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "brainsynth.api",
    "build": "brainsynth.api",
    "hookimpl": "brainsynth.core.hookspecs",
    **dict.fromkeys(("BrainsynthError", "RecipeError", "RegistryError", "DataError", "CheckpointError", "RunError",
                     "BrainsynthWarning"), "brainsynth.core.errors"),
    **dict.fromkeys(("Tokenizer", "Codebook", "ReconstructionLoss", "Quantized", "TokenizerOutput", "LossOutput"),
                    "brainsynth.core.tokenizer"),
    **dict.fromkeys(("Prior", "Conditioning", "TokenDecoder"), "brainsynth.core.prior"),
    "Ordering": "brainsynth.core.ordering",
    **dict.fromkeys(("DataSource", "Subject", "Variable"), "brainsynth.core.data"),
    **dict.fromkeys(("Task", "Section"), "brainsynth.core.task"),
}
"""Public name -> the module that defines it."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'brainsynth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
