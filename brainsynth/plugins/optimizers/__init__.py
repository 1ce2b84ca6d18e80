"""Built-in optimizers and learning-rate schedules, registered like any plugin's components.

Factories are named lazily (``.module:Name``), so registering them imports no torch.
"""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("optimizer", "adam", ".adam:adam")
    registry.register("optimizer", "adamw", ".adamw:adamw")
    registry.register("optimizer", "sgd", ".sgd:sgd")
    registry.register("lr_schedule", "constant", ".constant:constant")
    registry.register("lr_schedule", "exponential", ".exponential:Exponential")
