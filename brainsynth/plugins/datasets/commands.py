"""``brainsynth data demo-cohort``: kept apart from the cohort's code so that adding the command
(``brainsynth --help`` loads every plugin's commands) imports nothing heavy."""

from __future__ import annotations

import time
from pathlib import Path

import click


def add_commands(cli: click.Group) -> None:
    """Add ``brainsynth data demo-cohort`` (and the ``data`` group, unless another plugin did)."""
    group = cli.commands.get("data") if isinstance(cli, click.Group) else None
    if group is None:

        @cli.group("data")
        def group() -> None:
            """Data utilities."""

    @group.command("demo-cohort")
    @click.argument("out", type=click.Path(path_type=Path))
    @click.option("--subjects", default=64, show_default=True, help="Number of subjects.")
    @click.option("--spacing", default=3.0, show_default=True, help="Voxel size in mm (1 to 8).")
    @click.option("--seed", default=0, show_default=True, help="Seed; the same seed gives the same cohort.")
    @click.option("--val-fraction", default=0.125, show_default=True, help="Share of subjects held out for validation.")
    def demo_cohort(out: Path, subjects: int, spacing: float, seed: int, val_fraction: float) -> None:
        """Build a demo cohort from the MNI template into OUT (reused if already identical)."""
        from .demo_cohort import _matches, build_demo_cohort, cohort_settings

        start = time.perf_counter()
        already = _matches(out, cohort_settings(subjects, spacing, seed, val_fraction))
        folder = build_demo_cohort(out, subjects, spacing, seed, val_fraction)
        seconds = time.perf_counter() - start
        verb = "reused" if already else f"built in {seconds:.1f} s"
        click.echo(f"demo cohort {verb}: {folder} ({subjects} subjects at {spacing:g} mm, seed {seed})")
        click.echo(f"  subjects: {folder / 'train.tsv'}, {folder / 'val.tsv'}")
        click.echo(f"  conditioning: {folder / 'conditioning.tsv'}")

