"""Bring users of the original BrainSynth over: checkpoint import and script conversion.

Two commands, added through the ``register_commands`` hook like any plugin's:

* ``brainsynth import-checkpoint ORIGINAL.pt --recipe RECIPE [OUT.pt] [--run]`` (a tokenizer or a prior)
* ``brainsynth import-script SCRIPT.sh > recipe.yaml``
"""

from __future__ import annotations

import click

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    cli.add_command(import_checkpoint_command)
    cli.add_command(import_script_command)


@click.command(name="import-checkpoint")
@click.argument("original", type=click.Path(dir_okay=False, path_type=str))
@click.argument("out", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The recipe whose network the weights fill: a tokenizer recipe for baseline_vqvae, a prior recipe "
              "for performer/xtransformer (e.g. from 'brainsynth import-script').")
@click.option("--run", "make_run", is_flag=True,
              help="Also create the recipe's run directory (recipe.yaml + checkpoints/best.pt), ready for "
              "extract/decode (tokenizer) or sample/likelihood/evaluate (prior).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key; VALUE is YAML.")
def import_checkpoint_command(original: str, out: str | None, recipe_path: str, make_run: bool, overrides: tuple[str, ...]) -> None:
    """Import ORIGINAL (an original BrainSynth baseline_vqvae, performer or xtransformer checkpoint) into OUT and/or a run directory."""
    from brainsynth.core import plugins
    from brainsynth.core.recipe import load_recipe

    from .checkpoint_import import import_checkpoint

    registry = plugins.registry()
    recipe = load_recipe(recipe_path, registry, overrides=overrides)
    report = import_checkpoint(original, recipe, registry, out=out, run=make_run)
    source = report.source
    click.echo(
        f"imported {len(source.state)} tensors of the original {report.kind} ({report.parameters:,} parameters) from {source.path} "
        f"({source.form}{', DDP module. prefix stripped' if any(k.startswith('module.') for k in source.state) else ''})"
    )
    if source.other_entries:
        click.echo(f"not imported (training state of the original): {', '.join(source.other_entries)}")
    if source.allowed_globals:
        click.echo(f"pickled numpy data read by name: {', '.join(source.allowed_globals)}")
    click.echo(report.note)
    for path in report.written:
        click.echo(f"wrote {path}")


@click.command(name="import-script")
@click.argument("script", type=click.Path(dir_okay=False, path_type=str))
def import_script_command(script: str) -> None:
    """Convert an original run_vqvae.py / run_transformer.py command line (SCRIPT) into a recipe on stdout."""
    from .script_import import convert_script

    conversion = convert_script(script)
    click.echo(conversion.render(script), nl=False)
    for warning in conversion.warnings:
        click.echo(f"warning: {warning}", err=True)
