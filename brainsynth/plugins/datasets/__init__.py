"""Built-in datasets (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .demo_cohort import DemoCohort
    from .nifti import NiftiSource
    from .tokens import TokenDataset

    registry.register("dataset", "nifti", NiftiSource)
    registry.register("dataset", "demo_cohort", DemoCohort)
    registry.register("dataset", "tokens", TokenDataset)


@hookimpl
def register_commands(cli):
    from .commands import add_commands

    add_commands(cli)
