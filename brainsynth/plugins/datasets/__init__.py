"""Built-in datasets (registered through the ``register_components`` hook, like any plugin).

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("dataset", "nifti", ".nifti:NiftiSource")
    registry.register("dataset", "demo_cohort", ".demo_cohort:DemoCohort")
    registry.register("dataset", "tokens", ".tokens:TokenDataset")


@hookimpl
def register_commands(cli):
    from .commands import add_commands

    add_commands(cli)
