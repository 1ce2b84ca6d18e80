"""Orderings: how a grid of tokens is read as a sequence, and back.

An ordering is a permutation of the cells of a token grid. It is built like MONAI's
`monai.utils.ordering.Ordering`: a template holding each cell's row-major index is transformed
(transpose / rot90 / reflect, in the configured order), a walk (raster, S-curve, Hilbert, random)
visits the transformed template, and the visited template values are the sequence order. Subclasses
only say how to walk a shape (`walk`). The permutation is state saved with the model, so a
checkpoint is always sampled and scored in the order it was trained in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from .errors import CheckpointError, RecipeError

Transformation = Literal["transpose", "rotate_90", "reflect"]
DEFAULT_TRANSFORMATION_ORDER: tuple[Transformation, ...] = ("transpose", "rotate_90", "reflect")


class Ordering:
    """A permutation of the cells of a 2D or 3D token grid.

    `spatial_shape` is the token grid (injected by the engine). `transpositions_axes` is a list
    of axis permutations applied one after the other (``np.transpose``), `rot90_axes` a list of
    planes rotated by 90 degrees (``np.rot90``), `reflected_spatial_dims` one flag per axis
    (``np.flip``); `transformation_order` names the order in which these three steps run, and a
    step it does not name is skipped even if its arguments are given (MONAI's behaviour).
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        transpositions_axes: Sequence[Sequence[int]] | None = None,
        rot90_axes: Sequence[Sequence[int]] | None = None,
        reflected_spatial_dims: Sequence[bool] | None = None,
        transformation_order: Sequence[str] = DEFAULT_TRANSFORMATION_ORDER,
    ) -> None:
        self.spatial_shape = _check_shape(spatial_shape)
        ndim = len(self.spatial_shape)
        self.transpositions_axes = _check_transpositions(transpositions_axes, ndim)
        self.rot90_axes = _check_rot90(rot90_axes, ndim)
        self.reflected_spatial_dims = _check_reflections(reflected_spatial_dims, ndim)
        self.transformation_order = _check_transformation_order(transformation_order)
        template = self._transformed_template()
        walk = np.asarray(self.walk(template.shape), dtype=np.int64)
        if walk.shape != (template.size, ndim):
            raise ValueError(
                f"{type(self).__name__}.walk returned shape {walk.shape}, expected {(template.size, ndim)}"
            )
        order = template[tuple(walk.T)]
        self._set_order(order)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- subclasses ---------------------------------------------------------------------------
    def walk(self, shape: tuple[int, ...]) -> np.ndarray:
        """Coordinates [L, ndim] in which the cells of a (transformed) grid of `shape` are visited."""
        raise NotImplementedError

    # -- the permutation ----------------------------------------------------------------------
    @property
    def length(self) -> int:
        return int(np.prod(self.spatial_shape))

    def __len__(self) -> int:
        return self.length

    @property
    def sequence_order(self) -> torch.Tensor:
        """[L] row-major grid index of the cell read at each sequence position."""
        return self._order

    @property
    def revert_order(self) -> torch.Tensor:
        """[L] sequence position of each row-major grid cell (`argsort` of `sequence_order`)."""
        return self._revert

    def coordinates(self) -> torch.Tensor:
        """[L, ndim] grid coordinate (original axes) of the cell read at each sequence position."""
        return torch.from_numpy(np.stack(np.unravel_index(self._order.numpy(), self.spatial_shape), axis=1))

    def sequence(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, *spatial_shape, ...] grid -> [B, L, ...] sequence in this order."""
        ndim = len(self.spatial_shape)
        if tuple(grid.shape[1 : 1 + ndim]) != self.spatial_shape:
            raise ValueError(f"expected a grid [B, {', '.join(map(str, self.spatial_shape))}, ...], got {tuple(grid.shape)}")
        order, _ = self._indices(grid.device)
        return grid.flatten(1, ndim).index_select(1, order)

    def revert(self, sequence: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] sequence in this order -> [B, *spatial_shape, ...] grid."""
        if sequence.shape[1] != self.length:
            raise ValueError(f"expected a sequence [B, {self.length}, ...], got {tuple(sequence.shape)}")
        _, revert = self._indices(sequence.device)
        flat = sequence.index_select(1, revert)
        return flat.reshape(sequence.shape[0], *self.spatial_shape, *sequence.shape[2:])

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"spatial_shape": torch.tensor(self.spatial_shape), "sequence_order": self._order.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adopt a saved permutation; an ordering rebuilt from a different recipe is an error."""
        shape = tuple(int(s) for s in state["spatial_shape"])
        order = torch.as_tensor(state["sequence_order"], dtype=torch.long)
        if shape != self.spatial_shape or not _is_permutation(order, self.length):
            raise CheckpointError(
                f"the checkpoint's ordering is for a {'x'.join(map(str, shape))} grid, this recipe's is "
                f"{'x'.join(map(str, self.spatial_shape))}: use the tokenizer the prior was trained with."
            )
        if self.persistent_order_only and not torch.equal(order, self._order):
            raise CheckpointError(
                f"the checkpoint's {type(self).__name__} ordering differs from the one this recipe builds "
                f"(different transforms?): use the 'ordering' block the checkpoint was trained with."
            )
        self._set_order(order.numpy())

    persistent_order_only: bool = True
    """True when the order is fully determined by the recipe (a saved one must match it)."""

    # -- internals ----------------------------------------------------------------------------
    def _set_order(self, order: np.ndarray) -> None:
        self._order = torch.as_tensor(np.asarray(order, dtype=np.int64))
        self._revert = torch.argsort(self._order)
        self._device_cache = {}

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._device_cache.get(device)
        if cached is None:
            cached = (self._order.to(device), self._revert.to(device))
            self._device_cache[device] = cached
        return cached

    def _transformed_template(self) -> np.ndarray:
        template = np.arange(self.length).reshape(self.spatial_shape)
        for step in self.transformation_order:
            if step == "transpose":
                for axes in self.transpositions_axes:
                    template = np.transpose(template, axes)
            elif step == "rotate_90":
                for plane in self.rot90_axes:
                    template = np.rot90(template, k=1, axes=plane)
            elif step == "reflect":
                for axis, flip in enumerate(self.reflected_spatial_dims):
                    if flip:
                        template = np.flip(template, axis=axis)
        return np.ascontiguousarray(template)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'x'.join(map(str, self.spatial_shape))})"


def raster_walk(shape: Sequence[int]) -> np.ndarray:
    """Row-major coordinates of a grid (last axis fastest)."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), tuple(shape)), axis=1)


def _is_permutation(order: torch.Tensor, length: int) -> bool:
    return order.ndim == 1 and order.numel() == length and torch.equal(torch.sort(order).values, torch.arange(length))


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise RecipeError(f"ordering: the token grid must be 2D or 3D with positive sizes, got {shape}.")
    return shape


def _check_transpositions(value: Sequence[Sequence[int]] | None, ndim: int) -> list[tuple[int, ...]]:
    result = []
    for i, axes in enumerate(value or ()):
        axes = tuple(int(a) for a in axes)
        if sorted(axes) != list(range(ndim)):
            raise RecipeError(
                f"ordering.transpositions_axes[{i}]: {list(axes)} is not a permutation of the {ndim} grid "
                f"axes {list(range(ndim))}."
            )
        result.append(axes)
    return result


def _check_rot90(value: Sequence[Sequence[int]] | None, ndim: int) -> list[tuple[int, int]]:
    result = []
    for i, plane in enumerate(value or ()):
        plane = tuple(int(a) for a in plane)
        if len(plane) != 2 or plane[0] == plane[1] or not all(0 <= a < ndim for a in plane):
            raise RecipeError(
                f"ordering.rot90_axes[{i}]: {list(plane)} is not a plane of two different axes out of "
                f"{list(range(ndim))}."
            )
        result.append(plane)
    return result


def _check_reflections(value: Sequence[bool] | None, ndim: int) -> tuple[bool, ...]:
    if value is None:
        return (False,) * ndim
    flags = tuple(bool(v) for v in value)
    if len(flags) != ndim:
        raise RecipeError(
            f"ordering.reflected_spatial_dims: needs one flag per grid axis ({ndim}), got {list(value)}."
        )
    return flags


def _check_transformation_order(value: Sequence[str]) -> tuple[str, ...]:
    order = tuple(value)
    known = ("transpose", "rotate_90", "reflect")
    for step in order:
        if step not in known:
            raise RecipeError(f"ordering.transformation_order: unknown step '{step}'; use {', '.join(known)}.")
    duplicates = sorted({s for s in order if order.count(s) > 1})
    if duplicates:
        raise RecipeError(
            f"ordering.transformation_order: {', '.join(duplicates)} appears more than once in {list(order)}; "
            f"list each step once (repeat axes inside transpositions_axes / rot90_axes instead)."
        )
    return order
