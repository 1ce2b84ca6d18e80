"""Built-in tokenizers (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .baseline_vqvae import BaselineVQVAE


@hookimpl
def register_components(registry):
    registry.register("tokenizer", "baseline_vqvae", BaselineVQVAE)
