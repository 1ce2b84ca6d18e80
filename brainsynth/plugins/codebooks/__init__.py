"""Built-in codebooks (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .ema import EMACodebook
    from .vanilla import VanillaCodebook

    registry.register("codebook", "ema", EMACodebook, injected=("embedding_dim",))
    registry.register("codebook", "vanilla", VanillaCodebook, injected=("embedding_dim",))
