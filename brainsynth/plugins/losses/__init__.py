"""Built-in losses (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .jukebox_perceptual import JukeboxPerceptualLoss
    from .l1 import L1Loss
    from .mse import MSELoss
    from .perceptual import PerceptualLoss
    from .spectral import SpectralLoss

    registry.register("loss", "jukebox_perceptual", JukeboxPerceptualLoss)
    registry.register("loss", "perceptual", PerceptualLoss)
    registry.register("loss", "spectral", SpectralLoss)
    registry.register("loss", "mse", MSELoss)
    registry.register("loss", "l1", L1Loss)
