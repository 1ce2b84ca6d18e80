"""Built-in datasets (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .demo_cohort import DemoCohort, add_commands
from .nifti import NiftiSource
from .tokens import TokenDataset


@hookimpl
def register_components(registry):
    registry.register("dataset", "nifti", NiftiSource)
    registry.register("dataset", "demo_cohort", DemoCohort)
    registry.register("dataset", "tokens", TokenDataset)


@hookimpl
def register_commands(cli):
    add_commands(cli)
