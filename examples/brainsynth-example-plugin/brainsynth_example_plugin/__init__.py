"""The plugin: one hook registers components, another adds a command.

Components are named lazily (``.module:Class``, a module of this package): registering imports
nothing, so loading the plugin for ``brainsynth --help`` imports no torch. brainsynth imports each
module when the component is first used, and checks it against its kind's contract then. The
engine passes each factory the arguments of its kind that its signature declares (a prior's
``num_tokens``, ``ordering``, ``conditioning``, ...).
"""

import click
from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("ordering", "reverse_raster", ".reverse_raster:ReverseRaster")
    registry.register("prior", "gru_prior", ".gru_prior:GRUPrior")


@hookimpl
def register_commands(cli):
    @cli.command(name="example-hello")
    def hello():
        """Say hello from the example plugin."""
        click.echo("hello from brainsynth-example-plugin")
