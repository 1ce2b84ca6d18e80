"""Subjects: their names, and the lists of them that a folder of NIfTI files or a table gives.

* Subjects come from a folder of ``.nii``/``.nii.gz`` files (other files are ignored) or from a
  csv/tsv table with a ``path`` column (relative paths are taken from the table's folder).
  A missing file is named when the list is built; an unreadable one when it is loaded.
* A subject's name is its file name without extension; it keys conditioning rows and output files.
"""

from __future__ import annotations

import csv
import difflib
import os
from collections.abc import Sequence
from pathlib import Path

from brainsynth.core.data import Subject
from brainsynth.core.errors import DataError
from brainsynth.core.files import is_data_file

VOLUME_SUFFIXES = (".nii.gz", ".nii")
NAME_SUFFIXES = (".nii.gz", ".nii", ".npy")
"""Stripped from file names to give subject names (``.npy``: extracted token grids)."""


def subject_name(path: str | os.PathLike) -> str:
    """``/data/sub-01.nii.gz`` -> ``sub-01``: the file name without ``.nii``/``.nii.gz``/``.npy``."""
    name = Path(path).name
    for suffix in NAME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_table(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a ``.csv`` (comma) or ``.tsv`` (tab) file, cells stripped."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: a table must be a .csv (comma) or .tsv (tab) file.")
    if not path.is_file():
        raise DataError(f"{path}: table not found. Check the path (relative paths start at the working directory).")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            lines = [line for line in reader if any(cell.strip() for cell in line)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read this table ({exc}). Save it as UTF-8 {suffix[1:]}.") from exc
    if not lines:
        raise DataError(f"{path}: the table is empty; it needs a header row.")
    header = [cell.strip() for cell in lines[0]]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) > len(header):
            raise DataError(
                f"{path}, line {number}: {len(line)} cells for {len(header)} columns. "
                f"Check the delimiter ({'tab' if suffix == '.tsv' else 'comma'})."
            )
        rows.append({column: (line[i].strip() if i < len(line) else "") for i, column in enumerate(header)})
    return header, rows


def rename_hint(wanted: str, header: Sequence[str]) -> str:
    """`` Is 'x' that column? Rename it to 'wanted'.`` for a near miss in `header`, else ''."""
    close = difflib.get_close_matches(wanted, list(header), n=1, cutoff=0.6)
    return f" Is '{close[0]}' that column? Rename it to '{wanted}'." if close else ""


def list_subjects(source: str | os.PathLike) -> list[Subject]:
    """Subjects of a folder of NIfTI volumes or of a csv/tsv with a ``path`` column.

    Folders are listed in sorted order and files that are not ``.nii``/``.nii.gz`` are ignored.
    Every listed file must exist; two files with the same subject name are refused, since the
    name keys conditioning rows and output files.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(
            p
            for p in source.iterdir()
            if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES) and is_data_file(p)
        )
        if not paths:
            raise DataError(f"{source}: no .nii or .nii.gz files in this folder.")
        return _unique([Subject(subject_name(p), p) for p in paths], source)
    if not source.exists():
        raise DataError(
            f"{source}: no such folder or table. Give a folder of NIfTI files or a csv/tsv with a 'path' column."
        )
    header, rows = read_table(source)
    if "path" not in header:
        raise DataError(f"{source}: no 'path' column.{rename_hint('path', header)} Columns: {', '.join(header)}.")
    subjects = []
    for number, row in enumerate(rows, start=2):
        if not row["path"]:
            raise DataError(f"{source}, line {number}: empty 'path'.")
        path = Path(row["path"]).expanduser()
        if not path.is_absolute():
            path = source.parent / path
        if not path.is_file():
            raise DataError(f"{source}, line {number}: file {path} does not exist. Fix the path or remove the row.")
        subjects.append(Subject(subject_name(path), path))
    if not subjects:
        raise DataError(f"{source}: the table lists no subjects.")
    return _unique(subjects, source)


def _unique(subjects: list[Subject], source: Path) -> list[Subject]:
    seen: dict[str, Path] = {}
    for subject in subjects:
        if subject.name in seen:
            raise DataError(
                f"{source}: subject name '{subject.name}' is given by both {seen[subject.name]} and "
                f"{subject.path}. Rename one of them."
            )
        seen[subject.name] = subject.path
    return subjects
