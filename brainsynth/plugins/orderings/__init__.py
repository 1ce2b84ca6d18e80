"""Built-in orderings (registered through the ``register_components`` hook, like any plugin).

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("ordering", "raster_scan", ".raster_scan:RasterScan")
    registry.register("ordering", "s_curve", ".s_curve:SCurve")
    registry.register("ordering", "random", ".random:RandomOrder")
    registry.register("ordering", "hilbert_curve", ".hilbert_curve:HilbertCurve")
