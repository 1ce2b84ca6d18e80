"""Built-in conditioning (registered through the ``register_components`` hook, like any plugin)."""

from brainsynth.core.hookspecs import hookimpl

from .bos_replacement import BosReplacement
from .cross_attend import CrossAttend
from .none import NoConditioning
from .prepend import Prepend


@hookimpl
def register_components(registry):
    injected = ("model_dim", "num_levels")
    registry.register("conditioning", "none", NoConditioning)
    registry.register("conditioning", "bos_replacement", BosReplacement, injected=injected)
    registry.register("conditioning", "prepend", Prepend, injected=injected)
    registry.register("conditioning", "cross_attend", CrossAttend, injected=injected)
