"""Built-in orderings (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .hilbert_curve import HilbertCurve
    from .random import RandomOrder
    from .raster_scan import RasterScan
    from .s_curve import SCurve

    injected = ("spatial_shape",)
    registry.register("ordering", "raster_scan", RasterScan, injected=injected)
    registry.register("ordering", "s_curve", SCurve, injected=injected)
    registry.register("ordering", "random", RandomOrder, injected=injected)
    registry.register("ordering", "hilbert_curve", HilbertCurve, injected=injected)

