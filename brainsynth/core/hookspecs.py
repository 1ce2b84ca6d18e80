"""The plugin contract: two hooks, both keyword-only.

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

    Called once per process, for every plugin, before any recipe is validated. Kinds are listed in
    `brainsynth.core.registry.KINDS`. Registering a name that another plugin already registered
    for the same kind is an error naming both plugins.
    """


@hookspec
def register_commands(cli):
    """Add click commands to the ``brainsynth`` command group ``cli`` (``@cli.command()``)."""
