"""``brainsynth run RECIPE --dry-run``: build a recipe's models without data and without weights.

A task's `Task.dry_run` builds each model through `build_without_weights`, which puts every
parameter on torch's ``meta`` device: shapes and counts are exact, but nothing is allocated or
initialised, so the 684 M-parameter UKB prior is sized in about a second on a laptop. The result
is a `DryRun`: what the CLI prints, ending with one JSON line for scripts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from .errors import BrainsynthError

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Move each parameter to ``meta`` as a module registers it; buffers and other tensors stay real.

    The fallback for constructors that compute with real tensors (performer-pytorch draws an
    orthogonal projection with a QR on the CPU, which the meta device cannot do). Each weight is
    created uninitialised and dropped at once, so memory stays at about one layer's weights.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def _no_initialisation():
    """torch.nn.init's initialisers as no-ops: on the meta device they would only cost time (their
    reference implementations import torch._dynamo, over a second of a ``validate``)."""
    saved = {name: getattr(nn.init, name) for name in _INITIALISERS if hasattr(nn.init, name)}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def build_without_weights(build: Callable[[], ModuleT]) -> ModuleT:
    """`build()` with every parameter on the meta device (no memory, no initialisation).

    Tries torch's ``meta`` default device first (nothing at all is allocated); a constructor that
    needs real tensors for its own arithmetic is retried with `parameters_on_meta`. A
    `BrainsynthError` (a wrong setting) is raised as it is.
    """
    try:
        with torch.device("meta"), _no_initialisation():
            return build()
    except BrainsynthError:
        raise
    except Exception:  # noqa: BLE001 - e.g. "Cannot copy out of meta tensor": retry with real buffers
        pass
    with parameters_on_meta():
        return build()


def parameter_count(module: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in module.parameters())


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return str(count)


@dataclasses.dataclass
class DryRunModel:
    """One model of a recipe and its size."""

    role: str
    """What the model is to the recipe: ``network``, ``discriminator``, ``tokenizer``, ..."""
    component: str
    parameters: int
    trained: bool = True
    """False for models the recipe only uses (a frozen tokenizer under a prior)."""
    detail: str = ""


@dataclasses.dataclass
class DryRun:
    """What a dry run found: the models (the first is the recipe's main model) and the token grid."""

    models: list[DryRunModel]
    token_grid: tuple[int, ...] | None = None
    facts: list[str] = dataclasses.field(default_factory=list)
    """Further lines worth printing (sequence length, conditioning, where the grid comes from)."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """Caveats: anything the count could not know without data."""

    @property
    def parameters(self) -> int:
        return self.models[0].parameters

    def lines(self) -> list[str]:
        out = []
        for model in self.models:
            role = model.role if model.trained else f"{model.role} (frozen)"
            detail = f", {model.detail}" if model.detail else ""
            out.append(f"{role}: {model.component}, {model.parameters:,} parameters ({_human(model.parameters)}){detail}")
        if self.token_grid is not None:
            tokens = 1
            for size in self.token_grid:
                tokens *= size
            out.append(f"token grid: {'x'.join(map(str, self.token_grid))} ({tokens} tokens)")
        out += self.facts
        out += [f"note: {note}" for note in self.notes]
        return out

    def summary(self, recipe: str, task: str, mode: str) -> dict[str, Any]:
        """The JSON object the dry run ends with."""
        return {
            "recipe": recipe,
            "task": task,
            "mode": mode,
            "parameters": int(self.parameters),
            "token_grid": list(self.token_grid) if self.token_grid is not None else None,
            "models": {m.role: int(m.parameters) for m in self.models},
        }

    def json_line(self, recipe: str, task: str, mode: str) -> str:
        return json.dumps(self.summary(recipe, task, mode))
