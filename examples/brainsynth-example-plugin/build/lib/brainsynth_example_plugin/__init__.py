"""The plugin: one hook registers components, another adds a command."""

import click
from brainsynth.core.hookspecs import hookimpl

from .gru_prior import GRUPrior
from .reverse_raster import ReverseRaster


@hookimpl
def register_components(registry):
    registry.register("ordering", "reverse_raster", ReverseRaster, injected=("spatial_shape",))
    registry.register("transformer", "gru_prior", GRUPrior, injected=("num_tokens", "max_seq_len"))


@hookimpl
def register_commands(cli):
    @cli.command(name="example-hello")
    def hello():
        """Say hello from the example plugin."""
        click.echo("hello from brainsynth-example-plugin")
