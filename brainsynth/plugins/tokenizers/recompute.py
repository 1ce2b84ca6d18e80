"""Keep a recipe instead of a tensor for activations that are cheap to recompute.

Autograd keeps every slim residual layer's output ``act(conv1x1(h) + x)`` for the backward pass
(the activation's result, the next 3x3 conv's input), although recomputing it from ``h`` and
``x`` costs one 1x1 conv, 1/27 of the 3x3 conv that made ``h``. At the first level of a 3D
VQ-VAE these outputs are about half of all activation memory. Inside a `RecomputeScope`,
`RecomputeScope.register` marks such a tensor: from then on autograd saves a `Recipe` (the
function and its inputs) in its place and recomputes the value, without grad, when the backward
pass needs it. This is activation checkpointing restricted to the cheap, large tensors; the
expensive 3x3 conv outputs are kept.

Only the value at registration is reproduced, so a tensor is registered once it is final. Saves
that happened while it was being made (an in-place activation saves its own result) are found
and switched to the recipe too. Recomputation runs under the autocast state of the forward pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

__all__ = ["Recipe", "RecomputeScope"]


class Recipe:
    """``fn(*inputs)``, computed without grad when autograd unpacks it.

    Inputs are tensors (kept) or other recipes (recomputed in turn, so a chain of layers holds
    none of its outputs until the backward pass reaches it). A value, also one recomputed on the
    way to another, is cached only while saves of it are still to be unpacked, so each is
    computed once per backward pass.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: tuple, device_type: str) -> None:
        self.fn = fn
        self.inputs = inputs
        self.device_type = device_type
        self.autocast = torch.is_autocast_enabled(device_type)
        self.autocast_dtype = torch.get_autocast_dtype(device_type)
        self.pending = 0
        self.cached: torch.Tensor | None = None

    def compute(self) -> torch.Tensor:
        if self.cached is not None:
            return self.cached
        args = [item.compute_and_keep() if isinstance(item, Recipe) else item for item in self.inputs]
        with torch.no_grad(), torch.autocast(self.device_type, dtype=self.autocast_dtype, enabled=self.autocast):
            return self.fn(*args)

    def compute_and_keep(self) -> torch.Tensor:
        value = self.compute()
        if self.pending > 0:
            self.cached = value
        return value

    def unpack(self) -> torch.Tensor:
        value = self.compute()
        self.pending -= 1
        self.cached = value if self.pending > 0 else None
        return value


class _Saved:
    """What autograd holds for one saved tensor inside a scope: the tensor, or its recipe."""

    __slots__ = ("tensor", "version", "recipe", "__weakref__")

    def __init__(self, tensor: torch.Tensor | None, version: int = 0, recipe: Recipe | None = None) -> None:
        self.tensor = tensor
        self.version = version
        self.recipe = recipe

    def unpack(self) -> torch.Tensor:
        return self.recipe.unpack() if self.recipe is not None else self.tensor


class RecomputeScope:
    """``with RecomputeScope() as scope:`` run the forward pass, `register` cheap tensors."""

    def __init__(self) -> None:
        self._registered: dict[int, tuple[weakref.ref, int, Recipe]] = {}
        self._recent: list[weakref.ref] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def __enter__(self) -> RecomputeScope:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._registered.clear()
        self._recent.clear()

    def register(self, tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
        """`tensor` equals ``fn(*inputs)`` and will not change: save it as that recipe from now on.

        `fn` must be deterministic and must not modify its inputs; it runs without grad.
        """
        recipe = Recipe(fn, tuple(self._recipe_of(item) or item for item in inputs), tensor.device.type)
        version = tensor._version
        for ref in self._recent:
            saved = ref()
            if saved is not None and saved.tensor is tensor and saved.version == version:
                saved.tensor, saved.recipe = None, recipe
                recipe.pending += 1
        self._recent.clear()
        self._registered[id(tensor)] = (weakref.ref(tensor), version, recipe)

    def _recipe_of(self, tensor: torch.Tensor) -> Recipe | None:
        entry = self._registered.get(id(tensor))
        if entry is None or entry[0]() is not tensor or entry[1] != tensor._version:
            return None
        return entry[2]

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        recipe = self._recipe_of(tensor)
        if recipe is not None:
            recipe.pending += 1
            return _Saved(None, recipe=recipe)
        saved = _Saved(tensor, tensor._version)
        self._recent.append(weakref.ref(saved))
        return saved


def _unpack(saved: _Saved) -> torch.Tensor:
    return saved.unpack()
