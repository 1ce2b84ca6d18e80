"""Built-in conditioning (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .bos_replacement import BosReplacement
    from .cross_attend import CrossAttend
    from .none import NoConditioning
    from .prepend import Prepend

    injected = ("model_dim", "num_levels")
    registry.register("conditioning", "none", NoConditioning)
    registry.register("conditioning", "bos_replacement", BosReplacement, injected=injected)
    registry.register("conditioning", "prepend", Prepend, injected=injected)
    registry.register("conditioning", "cross_attend", CrossAttend, injected=injected)

