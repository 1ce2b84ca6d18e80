"""What a task is: a workflow over a recipe (train a tokenizer, sample a prior, run a pipeline).

Tasks are components of kind ``task``. Each declares the recipe sections it reads, so a recipe
is validated against exactly what its task uses, and the modes it runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from .dry_run import DryRun
    from .recipe import Recipe
    from .registry import Registry
    from .runner import Run


@dataclasses.dataclass(frozen=True)
class Section:
    """One top-level recipe key a task reads.

    A section is either a component block ``{name: ..., ...}`` of `kind` (a list of them when
    `many`), or a plain block checked against the dataclass `schema`.
    """

    kind: str | None = None
    schema: type | None = None
    many: bool = False
    required: bool = False
    default: str | None = None
    """Component name used when the block (or its ``name``) is left out."""
    doc: str = ""


class Task:
    """Base class of task components: subclasses set `sections` and `modes` and implement `run`."""

    sections: ClassVar[dict[str, Section]] = {}
    modes: ClassVar[tuple[str, ...]] = ()

    def run(self, run: Run) -> dict[str, Any]:
        """Carry out ``run.mode``; return the final metrics (written to ``metrics.json``)."""
        raise NotImplementedError

    def dry_run(self, recipe: Recipe, registry: Registry) -> DryRun:
        """Build the recipe's models without data or weights (``run --dry-run``); see `core.dry_run`.

        Nothing is read from the data and no run directory is touched, so a recipe can be sized
        before its data or its tokenizer run exist.
        """
        from .errors import RunError

        raise RunError(f"{recipe.source}: task '{recipe.task}' has no --dry-run; run it, or validate it with 'brainsynth validate'.")

    def load(self, directory: Path, recipe: Recipe, registry: Registry, *, checkpoint: str, device: torch.device) -> Any:
        """The trained run in `directory` as a Python object, for `brainsynth.load`; writes nothing."""
        from .errors import RunError

        raise RunError(f"{directory}: a '{recipe.task}' run has nothing to load in Python; load the run of what it trained.")

    @classmethod
    def check_recipe(cls, recipe: Recipe, registry: Registry) -> None:
        """Checks beyond the sections' schemas, run by ``validate`` (e.g. a pipeline's stages)."""
