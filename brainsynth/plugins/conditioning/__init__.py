"""Built-in conditioning (registered through the ``register_components`` hook, like any plugin).

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("conditioning", "none", ".none:NoConditioning")
    registry.register("conditioning", "bos_replacement", ".bos_replacement:BosReplacement")
    registry.register("conditioning", "prepend", ".prepend:Prepend")
    registry.register("conditioning", "cross_attend", ".cross_attend:CrossAttend")
