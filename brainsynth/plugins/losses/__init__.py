"""Built-in losses (registered through the ``register_components`` hook, like any plugin).

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("loss", "jukebox_perceptual", ".jukebox_perceptual:JukeboxPerceptualLoss")
    registry.register("loss", "perceptual", ".perceptual:PerceptualLoss")
    registry.register("loss", "spectral", ".spectral:SpectralLoss")
    registry.register("loss", "mse", ".mse:MSELoss")
    registry.register("loss", "l1", ".l1:L1Loss")
    registry.register("loss", "gradient_difference", ".gradient_difference:GradientDifferenceLoss")
