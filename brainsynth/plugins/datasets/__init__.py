"""Built-in datasets (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .tokens import TokenDataset


@hookimpl
def register_components(registry):
    registry.register("dataset", "tokens", TokenDataset)
