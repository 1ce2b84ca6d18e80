"""Built-in transformers (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .original_xtransformer import OriginalXTransformerPrior
    from .performer import PerformerPrior
    from .xtransformer import XTransformerPrior

    injected = ("num_tokens", "max_seq_len", "ordering", "conditioning")
    registry.register("transformer", "xtransformer", XTransformerPrior, injected=injected)
    registry.register("transformer", "performer", PerformerPrior, injected=injected)
    registry.register("transformer", "original_xtransformer", OriginalXTransformerPrior, injected=injected)
