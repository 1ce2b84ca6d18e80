"""Built-in tasks (registered through the ``register_components`` hook, like any plugin).

Each task is a package: ``task.py`` holds the task class (its sections, modes and recipe checks)
and each mode is one module of the package, imported when that mode runs.

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("task", "tokenizer", ".tokenizer.task:TokenizerTask")
    registry.register("task", "prior", ".prior.task:PriorTask", aliases=("transformer",))
    registry.register("task", "pipeline", ".pipeline.task:PipelineTask")
