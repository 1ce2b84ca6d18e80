"""Built-in tokenizers (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .baseline_vqvae import BaselineVQVAE

    registry.register("tokenizer", "baseline_vqvae", BaselineVQVAE)
