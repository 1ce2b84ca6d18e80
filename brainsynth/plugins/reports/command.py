"""``brainsynth report``: evaluate a folder of generated brains against real ones and write a report.

For samples drawn outside the demo pipeline (another temperature, another checkpoint, another
generator): the samples folder of a ``sample`` run carries each sample's conditioning in
``samples.csv``; any other folder of NIfTI files is evaluated without the morphology numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from brainsynth.core.errors import DataError


def read_samples(folder: Path) -> tuple[list[Path], list[dict] | None]:
    """The sample files of `folder` and their conditioning (from ``samples.csv`` if there is one)."""
    from brainsynth.library.subjects import list_subjects, read_table  # torch and MONAI: only when the command runs

    table = folder / "samples.csv"
    if not table.is_file():
        return [subject.path for subject in list_subjects(folder)], None
    header, rows = read_table(table)
    if "file" not in header:
        raise DataError(f"{table}: no 'file' column; it is not a samples table written by the sample mode.")
    paths, conditioning = [], []
    for number, row in enumerate(rows, start=2):
        path = folder / row["file"]
        if not path.is_file():
            raise DataError(f"{table}, line {number}: {path} does not exist (an unfinished sample run?).")
        paths.append(path)
        conditioning.append({k: v for k, v in row.items() if k not in ("sample", "file") and v != ""})
    if not paths:
        raise DataError(f"{table}: lists no samples.")
    return paths, conditioning


def _real_conditioning(table: Path, names: list[str]) -> list[dict]:
    from brainsynth.library.subjects import read_table

    header, rows = read_table(table)
    if "subject" not in header:
        raise DataError(f"{table}: no 'subject' column; the conditioning table is keyed by subject name.")
    by_subject = {row["subject"]: row for row in rows}
    missing = [name for name in names if name not in by_subject]
    if missing:
        raise DataError(f"{table}: no row for {', '.join(missing[:3])}; give the table of these real brains.")
    return [{k: v for k, v in by_subject[name].items() if k != "subject"} for name in names]


def _reconstructions(folder: Path, real: list[Path]) -> tuple[list[Path], list[Path]]:
    """Real brains that have a reconstruction of the same name in `folder`, paired."""
    from brainsynth.library.subjects import list_subjects, subject_name

    made = {subject.name: subject.path for subject in list_subjects(folder)}
    pairs = [(path, made[subject_name(path)]) for path in real if subject_name(path) in made]
    if not pairs:
        raise DataError(f"{folder}: no reconstruction is named like a real brain (e.g. {real[0].name}).")
    return [p for p, _ in pairs], [r for _, r in pairs]


def _metric(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise click.BadParameter(f"'{text}': expected NAME=NUMBER, e.g. tokenizer_ms_ssim=0.93.") from None


def add_commands(cli: click.Group) -> None:
    @cli.command("report")
    @click.argument("out", type=click.Path(path_type=Path))
    @click.option("--samples", "samples_dir", required=True, type=click.Path(path_type=Path),
                  help="Samples folder of a sample run (samples.csv gives the conditioning), or any NIfTI folder.")
    @click.option("--real", "real_source", required=True, type=click.Path(path_type=Path),
                  help="Real brains on the samples' grid: a NIfTI folder or a csv/tsv with a 'path' column.")
    @click.option("--real-conditioning", type=click.Path(path_type=Path), default=None,
                  help="csv/tsv keyed by 'subject' with the real brains' recorded volumes (e.g. conditioning.tsv).")
    @click.option("--reconstructed", type=click.Path(path_type=Path), default=None,
                  help="Folder of tokenizer reconstructions, named like the real brains (shown, and measured for "
                       "sharpness and volumes).")
    @click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Recipe to show in the report.")
    @click.option("--fid-weights", default=None,
                  help="MedicalNet .pth for FID; without it, a labelled random-feature distance is reported.")
    @click.option("--metric", "extra", multiple=True, metavar="NAME=NUMBER",
                  help="Another number for the table, e.g. tokenizer_ms_ssim=0.93.")
    @click.option("--title", default=None, help="Page title (default: the samples folder).")
    @click.option("--overwrite", is_flag=True, help="Replace an existing report in OUT.")
    def report(out, samples_dir, real_source, real_conditioning, reconstructed, recipe, fid_weights, extra, title,
               overwrite) -> None:
        """Evaluate generated brains against real ones and write the report folder OUT."""
        from brainsynth.library.reconstruction_evaluation import evaluate_reconstructions
        from brainsynth.library.report import ReportInputs, write_report
        from brainsynth.library.sample_evaluation import evaluate_samples
        from brainsynth.library.subjects import list_subjects, subject_name

        extra_metrics = dict(_metric(text) for text in extra)
        samples, conditioning = read_samples(samples_dir)
        real = [subject.path for subject in list_subjects(real_source)]
        real_rows = _real_conditioning(real_conditioning, [subject_name(p) for p in real]) if real_conditioning else None
        recipe_text = ""
        if recipe is not None:
            if not recipe.is_file():
                raise DataError(f"{recipe}: recipe file not found.")
            recipe_text = recipe.read_text()
        shown_real, recon = _reconstructions(reconstructed, real) if reconstructed else (real, [])
        click.echo(f"evaluating {len(samples)} samples against {len(real)} real brains ...")
        summary, rows, notes = evaluate_samples(
            samples, real, conditioning, fid_weights=fid_weights, reference_conditioning=real_rows,
            log=lambda line: click.echo(f"  {line}"),
        )
        if recon:
            names = [subject_name(p) for p in shown_real]
            recon_rows = _real_conditioning(real_conditioning, names) if real_conditioning else None
            kept = evaluate_reconstructions(shown_real, recon, recon_rows, names)
            summary.update(kept.values)
            rows = [*rows, *kept.rows]
            notes.update(kept.notes)
        metrics = {**extra_metrics, **summary}
        index = write_report(out, ReportInputs(
            title=title or f"brainsynth report: {samples_dir}", metrics=metrics, recipe_text=recipe_text,
            real=shown_real, reconstructed=recon, sampled=samples, morphology=rows, notes=notes,
        ), overwrite=overwrite)
        for key in ("ventricular_volume_spearman", "brain_volume_spearman"):
            if key in metrics and not math.isnan(metrics[key]):
                click.echo(f"{key}: {metrics[key]:.3f}")
        click.echo(f"report: {index}")
