"""Built-in adversarial (registered through the ``register_components`` hook, like any plugin;
their modules are imported when the hook runs, so that loading the plugin for its commands or
``--help`` costs no torch import)."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .baseline_discriminator import BaselineDiscriminator
    from .hinge import Hinge
    from .least_square import LeastSquare
    from .non_saturating import NonSaturating

    registry.register("discriminator", "baseline_discriminator", BaselineDiscriminator)
    registry.register("adversarial_loss", "least_square", LeastSquare)
    registry.register("adversarial_loss", "hinge", Hinge)
    registry.register("adversarial_loss", "non_saturating", NonSaturating)
