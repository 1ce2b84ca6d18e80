"""The plugin: one hook registers components, another adds a command.

Component modules are imported when the hook runs, so loading the plugin for ``brainsynth --help``
imports no torch.
"""

import click
from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    from .gru_prior import GRUPrior
    from .reverse_raster import ReverseRaster

    registry.register("ordering", "reverse_raster", ReverseRaster, injected=("spatial_shape",))
    registry.register(
        "transformer", "gru_prior", GRUPrior, injected=("num_tokens", "max_seq_len", "ordering", "conditioning")
    )


@hookimpl
def register_commands(cli):
    @cli.command(name="example-hello")
    def hello():
        """Say hello from the example plugin."""
        click.echo("hello from brainsynth-example-plugin")
