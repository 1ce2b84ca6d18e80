"""The Python API: a trained run as an object, in a notebook, without the CLI.

    import brainsynth
    tokenizer = brainsynth.load("runs/demo/tokenizer")   # encode / decode / reconstruct
    prior = brainsynth.load("runs/demo/prior")           # sample / sample_tokens / likelihood
    brains = prior.sample(4, {"age": 70, "sex": 1, "diagnosis": 1}, guidance_scale=1.5)

What comes back is the run's task's to say (`Task.load`), built from the run's recipe and
checkpoint as its modes build them; nothing is written. Relative paths in the recipe (the data)
are read from the working directory, as the CLI reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .core.errors import RecipeError, RunError


def load(run_dir: str | os.PathLike, *, checkpoint: str = "best", device: str = "cpu") -> Any:
    """The trained tokenizer or prior of `run_dir` (its ``best`` or ``last`` checkpoint) on `device`."""
    import torch

    from .core import plugins
    from .core.recipe import recipe_from_text

    directory = Path(run_dir)
    path = directory / "recipe.yaml"
    if not path.is_file():
        raise RunError(f"{directory}: no recipe.yaml here; give the directory of a trained run (e.g. runs/demo/prior).")
    if checkpoint not in ("best", "last"):
        raise RunError(f"checkpoint: 'best' or 'last', got {checkpoint!r}.")
    registry = plugins.registry()
    recipe = recipe_from_text(path.read_text(), registry, str(path))
    task = registry.get("task", recipe.task).build({})
    return task.load(directory, recipe, registry, checkpoint=checkpoint, device=torch.device(device))


def build(kind: str, block: dict[str, Any], **engine_arguments: Any) -> Any:
    """A component built by its registered name, as a recipe block builds it, for use in Python.

    ``brainsynth.build("tokenizer", {"name": "baseline_vqvae", "codebook": {"name": "ema"}})``
    validates `block` against the component's parameters (one-line `RecipeError` on a mistake),
    builds its nested blocks with the same registry, and passes `engine_arguments` (those the kind's
    engine supplies, e.g. ``embedding_dim`` for a codebook, ``spatial_shape`` for an ordering).
    """
    from .core import plugins

    if not isinstance(block, dict) or "name" not in block:
        raise RecipeError(f"build: the block is a mapping with a 'name' (a registered {kind}), got {block!r}.")
    return plugins.registry().build_nested(kind, block, kind, **engine_arguments)
