"""Built-in codebooks (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .ema import EMACodebook
from .vanilla import VanillaCodebook


@hookimpl
def register_components(registry):
    registry.register("codebook", "ema", EMACodebook, injected=("embedding_dim",))
    registry.register("codebook", "vanilla", VanillaCodebook, injected=("embedding_dim",))
