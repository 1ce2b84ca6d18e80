"""Built-in adversarial components (registered through the ``register_components`` hook, like any plugin).

Factories are named lazily (``.module:Name``): registering them imports nothing, so loading the
plugin for ``--help`` or its commands costs no torch; each is imported, and checked against its
kind's contract, when first used."""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("discriminator", "baseline_discriminator", ".baseline_discriminator:BaselineDiscriminator")
    registry.register("adversarial_loss", "least_square", ".least_square:LeastSquare")
    registry.register("adversarial_loss", "hinge", ".hinge:Hinge")
    registry.register("adversarial_loss", "non_saturating", ".non_saturating:NonSaturating")
