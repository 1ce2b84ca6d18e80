"""Built-in datasets (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    pass
