"""The plugin contract: two registration hooks and four run lifecycle hooks, all keyword-only.

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names match the
specifications below. Built-in components use exactly this contract; third-party packages expose
their module through the ``brainsynth`` entry-point group::

    [project.entry-points.brainsynth]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

import pluggy

PROJECT = "brainsynth"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(registry):
    """Register components with ``registry.register(kind, name, factory, ...)``.

    Called once per process, for every plugin, before any recipe is validated. Kinds, with the
    contract each component must meet and the arguments the engine supplies, are in
    `brainsynth.core.kinds`. ``factory`` may be ``".module:Name"`` in the plugin's own package,
    imported (and checked) when first used, so that registering costs no import. Registering a
    name that another plugin already registered for the same kind is an error naming both plugins.
    """


@hookspec
def register_commands(cli):
    """Add click commands to the ``brainsynth`` command group ``cli`` (``@cli.command()``)."""


# -- run lifecycle: called in the process that writes the run (rank 0), for every mode -------------
# For a plugin that sends metrics to MLflow or W&B without writing a task. An exception raised in
# one of them stops the run with one line naming the plugin and the hook.


@hookspec
def run_started(run):
    """A mode starts: ``run.recipe``, ``run.mode``, ``run.directory`` are set; nothing is trained yet."""


@hookspec
def metrics_logged(run, step, split, metrics):
    """Values were logged at `step` (``split``: ``train``, ``val``, ...): `metrics` maps names to numbers."""


@hookspec
def checkpoint_saved(run, path, epoch, step):
    """A checkpoint was written to `path` (``last.pt`` after each epoch, ``best.pt`` on improvement)."""


@hookspec
def run_finished(run, metrics, error):
    """A mode ended: with its final `metrics` (and `error` None), or with the `error` that stopped it."""
