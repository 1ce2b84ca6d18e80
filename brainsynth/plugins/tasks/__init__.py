"""Built-in tasks (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .pipeline import PipelineTask
from .tokenizer import TokenizerTask
from .transformer import TransformerTask


@hookimpl
def register_components(registry):
    registry.register("task", "tokenizer", TokenizerTask)
    registry.register("task", "transformer", TransformerTask)
    registry.register("task", "pipeline", PipelineTask)
