"""Built-in transformers (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .original_xtransformer import OriginalXTransformerPrior
from .performer import PerformerPrior
from .xtransformer import XTransformerPrior


@hookimpl
def register_components(registry):
    injected = ("num_tokens", "max_seq_len", "ordering", "conditioning")
    registry.register("transformer", "xtransformer", XTransformerPrior, injected=injected)
    registry.register("transformer", "performer", PerformerPrior, injected=injected)
    registry.register("transformer", "original_xtransformer", OriginalXTransformerPrior, injected=injected)
