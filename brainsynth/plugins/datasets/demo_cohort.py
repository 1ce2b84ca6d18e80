"""The ``demo_cohort`` dataset and ``brainsynth data demo-cohort``: subjects with known morphology.

A cohort folder holds::

    images/sub-0000.nii.gz ...   T1 volumes (float32, MNI affine, sform/qform code 4)
    conditioning.tsv             subject, age, sex, diagnosis, ventricular_volume, brain_volume,
                                 medial_temporal_volume (volumes in ml)
    train.tsv, val.tsv           subject lists (path, subject); a seeded, fixed split
    cohort.json                  the settings it was built with (written last)

``diagnosis`` is 1 for "AD-like" neurodegeneration (0 control), more likely with age (10 % at
45, 50 % at 82; about a quarter of a cohort): diagnosed subjects lose medial temporal tissue and
their ventricles grow further (see `cohort_synthesis`). ``medial_temporal_volume`` is the GM+WM
inside the fixed MNI medial temporal region, which the morphology measurement also reads. In the
64-subject, 3 mm cohort of seed 0, 17 subjects are diagnosed; their medial temporal volume is
12.9 ± 1.0 ml against 15.7 ± 0.9 ml (Cohen's d -3.0; measured from the images: -2.0), their
ventricles larger by d 1.8.

A folder whose ``cohort.json`` matches the requested settings is reused as it is; building the
same settings again gives byte-identical volumes. The cohort is built into a temporary sibling
folder and renamed into place, so an interrupted build never looks finished and parallel
processes (e.g. DDP ranks) agree on one result.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from brainsynth.library.subjects import list_subjects
from brainsynth.library.volume_data import VolumeSource, cache_root
from brainsynth.core.errors import BrainsynthError, DataError
from brainsynth.core.run_log import Progress
from brainsynth.library.volume_transforms import transform_settings

from .cohort_synthesis import cohort_grid, draw_subject, synthesize

COHORT_VERSION = 2
"""Bumped whenever the synthesis changes, so an old cohort is never mistaken for a new one (2: the diagnosis)."""

CONDITIONING_COLUMNS = (
    "subject", "age", "sex", "diagnosis", "ventricular_volume", "brain_volume", "medial_temporal_volume"
)


def cohort_settings(subjects: int, spacing: float, seed: int, val_fraction: float) -> dict:
    """The settings that define a cohort (and are compared to reuse one)."""
    if subjects < 2:
        raise DataError(f"a demo cohort needs at least 2 subjects (one to train, one to validate), got {subjects}.")
    if not 1.0 <= spacing <= 8.0:
        raise DataError(f"demo cohort spacing must be between 1 and 8 mm, got {spacing}.")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"demo cohort val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    return {
        "generator": "brainsynth demo_cohort",
        "version": COHORT_VERSION,
        "subjects": int(subjects),
        "spacing": float(spacing),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
    }


def default_cohort_folder(subjects: int, spacing: float, seed: int, val_fraction: float) -> Path:
    """``cache_root()/demo_cohort/<settings>``: shared by every run asking for the same cohort."""
    name = f"n{subjects}-sp{spacing:g}-seed{seed}-val{val_fraction:g}-v{COHORT_VERSION}"
    return cache_root() / "demo_cohort" / name


def validation_subjects(subjects: int, seed: int, val_fraction: float) -> list[int]:
    """Indices of the validation subjects: a seeded choice of round(n * val_fraction), >= 1."""
    count = min(subjects - 1, max(1, round(subjects * val_fraction)))
    order = np.random.default_rng([seed, 2**20]).permutation(subjects)
    return sorted(int(i) for i in order[:count])


def _matches(folder: Path, settings: dict) -> bool:
    try:
        return json.loads((folder / "cohort.json").read_text()) == settings
    except (OSError, ValueError):
        return False


def _describe(folder: Path) -> str:
    try:
        settings = json.loads((folder / "cohort.json").read_text())
        return ", ".join(f"{key} {value}" for key, value in settings.items() if key != "generator")
    except (OSError, ValueError, AttributeError):
        return "unreadable cohort.json"


def _write_table(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_cohort(folder: Path, settings: dict) -> None:
    grid = cohort_grid(settings["spacing"])
    images = folder / "images"
    images.mkdir(parents=True)
    conditioning, lists = [], {"train": [], "val": []}
    val = set(validation_subjects(settings["subjects"], settings["seed"], settings["val_fraction"]))
    desc = f"demo cohort ({settings['subjects']} subjects at {settings['spacing']:g} mm, built once and reused)"
    with Progress(settings["subjects"], desc, enabled=os.environ.get("RANK", "0") == "0") as bar:
        for index in range(settings["subjects"]):
            condition_row, list_row = _write_subject(folder, grid, settings["seed"], index)
            conditioning.append(condition_row)
            lists["val" if index in val else "train"].append(list_row)
            bar.update()
    _write_table(folder / "conditioning.tsv", list(CONDITIONING_COLUMNS), conditioning)
    for name, rows in lists.items():
        _write_table(folder / f"{name}.tsv", ["path", "subject"], rows)
    (folder / "cohort.json").write_text(json.dumps(settings, indent=2) + "\n")


def _write_subject(folder: Path, grid, seed: int, index: int) -> tuple[list, list]:
    """Synthesize subject `index` and save its T1; return its conditioning row and its subject-list row."""
    subject = synthesize(draw_subject(index, seed), grid)
    variables = subject.variables
    image = nib.Nifti1Image(subject.t1, grid.affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(grid.affine, code=4)  # 4: MNI 152 space
    image.set_qform(grid.affine, code=4)
    relative = f"images/{variables.name}.nii.gz"
    nib.save(image, str(folder / relative))
    volumes = [f"{v:.3f}" for v in (subject.ventricular_volume, subject.brain_volume, subject.medial_temporal_volume)]
    row = [variables.name, f"{variables.age:.2f}", variables.sex, variables.diagnosis, *volumes]
    return row, [relative, variables.name]


def build_demo_cohort(
    folder: str | os.PathLike,
    subjects: int = 64,
    spacing: float = 3.0,
    seed: int = 0,
    val_fraction: float = 0.125,
) -> Path:
    """Build the cohort into `folder`, or reuse the identical one already there; return `folder`.

    A folder that holds something else (another cohort, other files) is refused rather than
    overwritten.
    """
    folder = Path(folder).expanduser()
    settings = cohort_settings(subjects, spacing, seed, val_fraction)
    if _matches(folder, settings):
        return folder
    if (folder / "cohort.json").exists():
        raise BrainsynthError(
            f"{folder}: holds a demo cohort built with other settings ({_describe(folder)}). "
            "Choose another folder, or delete this one."
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BrainsynthError(f"{folder}: exists and is not a demo cohort. Choose a new or empty folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_cohort(staging, settings)
        if folder.is_dir():
            folder.rmdir()  # empty, checked above
        os.rename(staging, folder)
    except OSError:
        if _matches(folder, settings):  # another process finished the same cohort first
            return folder
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


class DemoCohort(VolumeSource):
    """The demo cohort: MNI-template subjects whose age, sex, diagnosis and morphology are known.

    Parameters (recipe keys):
        subjects: number of subjects.
        spacing: voxel size in mm (3 mm: 66x78x63 voxels).
        seed: the cohort's seed; the same seed gives the same cohort.
        val_fraction: share of subjects held out for validation (at least one).
        directory: where the cohort lives; default ``cache_root()/demo_cohort/<settings>``
            (``$BRAINSYNTH_CACHE``, else ``~/.cache/brainsynth``), shared by all runs asking
            for the same cohort. An identical cohort already there is reused.
        roi, canonical, normalize, augment, augmentation_probability, augmentation_strength,
        cache, cache_dir: as for the ``nifti`` dataset.

    `conditioning_table` is the cohort's ``conditioning.tsv``; `directory` its folder.
    """

    def __init__(
        self,
        subjects: int = 64,
        spacing: float = 3.0,
        seed: int = 0,
        val_fraction: float = 0.125,
        directory: str | None = None,
        roi: list[int] | list[list[int]] | None = None,
        canonical: bool = False,
        normalize: Literal["minmax", "zscore"] = "minmax",
        augment: bool = False,
        augmentation_probability: float = 0.2,
        augmentation_strength: float = 0.0,
        cache: Literal["none", "memory", "disk"] = "none",
        cache_dir: str | None = None,
    ) -> None:
        settings = transform_settings(
            roi=roi,
            canonical=canonical,
            normalize=normalize,
            augment=augment,
            augmentation_probability=augmentation_probability,
            augmentation_strength=augmentation_strength,
        )
        if directory is None:
            folder = default_cohort_folder(subjects, spacing, seed, val_fraction)
        else:
            folder = Path(directory)
        self.directory = build_demo_cohort(folder, subjects, spacing, seed, val_fraction)
        splits = {name: list_subjects(self.directory / f"{name}.tsv") for name in ("train", "val")}
        super().__init__(
            splits, settings, cache=cache, cache_dir=cache_dir, conditioning_table=self.directory / "conditioning.tsv"
        )
