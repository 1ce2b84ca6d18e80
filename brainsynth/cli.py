"""The ``brainsynth`` command line. Plugins add commands through ``register_commands``.

Errors end in one line (``--debug`` shows the traceback): a user's mistake exits 2, a run stopped
by a signal exits 128 + its number, an error that is not brainsynth's own exits 1, naming the
plugin and the component it came from when there is one. Warnings of brainsynth's own
(`BrainsynthWarning`) are one ``warning:`` line each, from rank 0 only. Under ``--nproc-per-node`` the launcher speaks for the job:
its workers stop quietly when they are told to, and the launcher says why in one line.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import click

from brainsynth import __version__
from brainsynth.core import plugins
from brainsynth.core.errors import BrainsynthError, BrainsynthWarning
from brainsynth.core.kinds import ALIASES, KINDS, canonical
from brainsynth.core.signals import Stopped


def _worker() -> bool:
    """True in a process that torch's launcher started (it reports for the whole job)."""
    return "LOCAL_RANK" in os.environ


class PluginCommands(click.Group):
    """A command group that loads plugins (and the commands they add) only when a name is not one of
    its own or the full list is asked for: ``brainsynth --version`` and the built-in commands'
    parsing then cost no plugin imports (MONAI, x-transformers, ...: seconds of CPU)."""

    loaded = False

    def _load_plugin_commands(self) -> None:
        if not self.loaded:
            plugins.register_commands(self)
            self.loaded = True

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and not self.loaded:
            self._load_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=PluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.version_option(__version__, prog_name="brainsynth")
def cli(debug: bool) -> None:
    """Morphology-preserving generative modelling of 3D brain MRI."""


def _load(recipe: str, overrides: tuple[str, ...], mode: str | None):
    from brainsynth.core.recipe import load_recipe

    return load_recipe(recipe, plugins.registry(), overrides=overrides, mode=mode)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
@click.option("--mode", "mode", default=None, help="Override the recipe's mode (train, extract, sample, ...).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key; VALUE is YAML.")
@click.option("--resume", is_flag=True, help="Continue an existing run from its last checkpoint.")
@click.option("--allow-changes", is_flag=True, help="With --resume: accept a recipe that changes the result, recorded as recipe.amendment-N.yaml.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True, help="Processes to launch on this node through torch's elastic launcher.")
@click.option("--dry-run", is_flag=True, help="Build the models without data or weights; print their sizes and the token grid, then one JSON line.")
def run(recipe: str, mode: str | None, overrides: tuple[str, ...], resume: bool, allow_changes: bool, nproc_per_node: int, dry_run: bool) -> None:
    """Run RECIPE: train, extract, sample, ... as its task and mode say."""
    from brainsynth.core import distributed, runner
    from brainsynth.core.errors import RunError

    if _worker():
        from brainsynth.core.signals import follow_launcher

        follow_launcher()  # before anything slow: a worker never outlives its launcher
    if allow_changes and not resume:
        raise RunError("--allow-changes applies to --resume only (a new run records its recipe as it is).")
    resolved = _load(recipe, overrides, mode)
    if dry_run:
        _dry_run(recipe, resolved)
        return
    if nproc_per_node > 1 and not _worker():
        argv = ["run", recipe, *(f"--set={o}" for o in overrides)]
        if mode:
            argv += ["--mode", mode]
        if resume:
            argv.append("--resume")
        if allow_changes:
            argv.append("--allow-changes")
        sys.exit(distributed.launch(nproc_per_node, argv, directory=runner.run_directory(resolved)))
    runner.execute(resolved, plugins.registry(), resume=resume, allow_changes=allow_changes)
    experiment = resolved["experiment"]
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"done: results in {Path(experiment['root']) / experiment['name']}")


def _dry_run(recipe: str, resolved) -> None:
    """Print what `Task.dry_run` found; the last line is one JSON object for scripts."""
    task = plugins.registry().get("task", resolved.task).build({})
    report = task.dry_run(resolved, plugins.registry())
    click.echo(f"dry run of {recipe} (task {resolved.task}, mode {resolved.mode}): no data read, no weights allocated")
    for line in report.lines():
        click.echo(f"  {line}")
    click.echo(report.json_line(recipe, resolved.task, resolved.mode))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
@click.option("--grid", "grid", multiple=True, metavar="KEY.PATH=V1,V2,...", help="Values to sweep for one recipe key (YAML, comma-separated); repeat for more keys.")
@click.option("--mode", "mode", default=None, help="Run every combination in this mode (default: the recipe's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key in every run; VALUE is YAML.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True, help="Launch each run in this many processes (torch's elastic launcher, as 'run' does).")
@click.option("--list", "list_only", is_flag=True, help="Validate and list the combinations without running them.")
@click.option("--allow-changes", is_flag=True, help="Resume interrupted runs even when their recipe changed in ways that alter the result (recorded as amendments).")
def sweep(recipe: str, grid: tuple[str, ...], mode: str | None, overrides: tuple[str, ...], nproc_per_node: int, list_only: bool, allow_changes: bool) -> None:
    """Run RECIPE once per combination of the --grid values; compare them in sweep.csv and sweep.md.

    Runs are named <experiment.name>-<suffix> under experiment.root; finished ones are skipped when
    the same sweep is run again, interrupted ones resumed.
    """
    from brainsynth.core import distributed, runner
    from brainsynth.core import sweep as sweeps
    from brainsynth.core.errors import RunError

    registry = plugins.registry()
    planned = sweeps.plan(recipe, grid, registry, overrides=overrides, mode=mode)
    if list_only:
        for combination in planned.combinations:
            state = "finished" if combination.finished(planned.mode) else "to run"
            click.echo(f"{combination.name}: {' '.join('--set ' + o for o in combination.overrides()[:-1])} ({state})")
        click.echo(f"{len(planned.combinations)} combinations; tables in {planned.directory}")
        return

    def run_one(combination, resume: bool) -> None:
        if nproc_per_node > 1:
            argv = ["run", recipe, *(f"--set={o}" for o in (*overrides, *combination.overrides())), "--mode", planned.mode]
            if resume:
                argv.append("--resume")
                if allow_changes:
                    argv.append("--allow-changes")
            code = distributed.launch(nproc_per_node, argv, directory=combination.directory)
            if code:
                raise RunError(f"the run exited with code {code} (its message is above).")
        else:
            runner.execute(combination.recipe, registry, resume=resume, allow_changes=resume and allow_changes)

    outcomes = sweeps.run_sweep(planned, run_one, echo=lambda line: click.echo(line))
    click.echo(f"sweep: {planned.directory / 'sweep.csv'} and {planned.directory / 'sweep.md'}")
    failed = [name for name, outcome in outcomes.items() if outcome.status == "failed"]
    if failed:
        raise RunError(f"{len(failed)} of {len(outcomes)} sweep runs failed: {', '.join(failed)} (see sweep.md); "
                       "fix the cause and run the same sweep again to run only those.")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
@click.option("--mode", "mode", default=None, help="Validate for this mode.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key; VALUE is YAML.")
@click.option("--show", is_flag=True, help="Print the fully resolved recipe, defaults included.")
def validate(recipe: str, mode: str | None, overrides: tuple[str, ...], show: bool) -> None:
    """Check RECIPE without running anything."""
    resolved = _load(recipe, overrides, mode)
    if show:
        click.echo(resolved.text(), nl=False)
    else:
        click.echo(f"{recipe}: valid (task {resolved.task}, mode {resolved.mode})")


@cli.command(name="plugins")
@click.option("--kind", type=click.Choice([*KINDS, *ALIASES]), default=None, help="Only components of this kind.")
def list_plugins(kind: str | None) -> None:
    """List installed components: kind (and its contract), name, provider, parameters; a task's sections and modes.

    Every component is imported and checked against its kind's contract on the way, so a plugin
    that does not meet it is named here.
    """
    registry = plugins.registry()
    kind = canonical(kind) if kind is not None else None
    current = None
    for component in registry:
        if kind is not None and component.kind != kind:
            continue
        if component.kind != current:
            current = component.kind
            click.echo(f"\n[{current}] {KINDS[current].describe()}")
        aliases = f" (also: {', '.join(component.aliases)})" if component.aliases else ""
        click.echo(f"  {component.name:<24} {component.description}{aliases}  ({component.provider})")
        if component.kind == "task":
            _task_details(component.factory)
        for param in component.schema.parameters.values():
            default = "required" if param.required else f"default {param.default!r}"
            click.echo(f"      {param.name}: {param.type_name} ({default})")


def _task_details(task) -> None:
    """A task's modes and the recipe sections it reads."""
    click.echo(f"      modes: {', '.join(task.modes)}")
    click.echo("      sections:")
    for key, section in task.sections.items():
        if section.kind is not None:
            what = f"{section.kind} block{'s' if section.many else ''}"
            if section.default:
                what += f", default {section.default}"
        else:
            what = "settings"
        need = ", required" if section.required else ""
        doc = f": {section.doc}" if section.doc else ""
        click.echo(f"        {key} ({what}{need}){doc}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one message and exit 2; ``--debug`` shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("BRAINSYNTH_DEBUG"))
    _one_line_warnings()
    try:
        cli.main(args=args, prog_name="brainsynth", standalone_mode=False)
    except BrainsynthError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        if not _worker():
            click.echo("interrupted", err=True)
        sys.exit(130)
    except Stopped as exc:
        if debug:
            raise
        if not _worker():
            click.echo(f"error: {exc}; checkpoints written so far are kept (training continues with --resume).", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - a bug (ours, a plugin's, a library's) is one line too
        if debug:
            raise
        click.echo(f"error: {plugin_failure(exc) or unexpected(exc)}", err=True)
        sys.exit(1)
    sys.exit(0)


_format_warning = warnings.formatwarning


def _one_line_warnings() -> None:
    """`BrainsynthWarning`s print as ``warning: ...`` (one line, not Python's two); only rank 0 says them."""

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, BrainsynthWarning):
            return f"warning: {message}\n"
        return _format_warning(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
    if int(os.environ.get("RANK", "0")) != 0:
        warnings.filterwarnings("ignore", category=BrainsynthWarning)


def plugin_failure(exc: BaseException) -> str | None:
    """The line naming the plugin (and component, or hook) `exc` came from, when one did. Only what
    is loaded already is consulted: an error before the plugins were loaded came from none."""
    from brainsynth.core.plugin_errors import blame, blame_hook

    try:
        line = blame(exc, plugins.registry()) if plugins.registry.cache_info().currsize else None
        if line is None and plugins.plugin_manager.cache_info().currsize:
            line = blame_hook(exc, plugins.plugin_manager())
        return line
    except Exception:  # noqa: BLE001 - the error being reported matters more than naming its plugin
        return None


def unexpected(exc: BaseException) -> str:
    """One line for an error brainsynth does not anticipate: what was raised, where, and what to do."""
    from brainsynth.core.plugin_errors import raised

    return (
        f"{raised(exc)}. This is an error brainsynth does not check for, probably a bug in the code "
        f"named; run again with --debug for the traceback, and report it to that code's authors."
    )


if __name__ == "__main__":
    main()
