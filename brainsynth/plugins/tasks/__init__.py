"""Built-in tasks (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .pipeline import PipelineTask
    from .tokenizer import TokenizerTask
    from .transformer import TransformerTask

    registry.register("task", "tokenizer", TokenizerTask)
    registry.register("task", "transformer", TransformerTask)
    registry.register("task", "pipeline", PipelineTask)
