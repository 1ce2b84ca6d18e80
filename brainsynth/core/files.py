"""Files of a run: names that stay inside it, temporary names that are never data, atomic writes.

A run directory is a record, so everything written there goes through here:

* `single_component` checks a name that becomes one folder (``experiment.name``, a stage name);
* `inside` resolves a path under a run and refuses one that leaves it (``..``, absolute paths,
  symbolic links pointing out);
* `temporary_path` names the file an atomic write goes to first: hidden, ending in
  ``.tmp-<pid>``, so no data pattern (``*.nii``, ``*.nii.gz``, ``*.npy``) can match it, and the
  process that wrote it can be told alive or dead;
* `write_bytes_atomic`, the one atomic writer (its ``.npy`` and NIfTI forms are in
  `brainsynth.library.volume_files`), writes through such a name and renames; a write that
  fails (a full disk) removes its temporary file at once;
* `remove_leftovers` deletes what interrupted writes left behind when a mode starts again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import RecipeError, RunError

TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")
"""Temporary files this version writes: ``.<final name>.tmp-<pid>``."""

LEGACY_TEMPORARY = re.compile(r"(\.tmp\.nii\.gz|\.tmp\.nii|\.tmp\.png|\.tmp\.npy)$|^\..+\.tmp$")
"""Temporary names of earlier versions: ``x.nii.gz.tmp.nii.gz``, ``.x.npy.tmp``, ``.x.png.tmp.png``."""


def single_component(name: object, key: str, where: str) -> None:
    """Refuse a name that is not exactly one path component (it would put a folder elsewhere)."""
    text = str(name) if name is not None else ""
    if (
        not text.strip()
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or "\0" in text
        or os.path.isabs(text)
    ):
        raise RecipeError(
            f"{where}: {key}: {text!r} must be a single folder name (no '/', not '.' or '..', not "
            f"empty); runs live in a folder of that name under experiment.root."
        )


def inside(root: str | os.PathLike, path: str | os.PathLike, key: str) -> Path:
    """`path` (relative to `root`) resolved, after checking that it stays inside `root`."""
    root = Path(root).resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise RunError(
            f"{key}: '{path}' resolves to {target}, outside the run directory {root}. Give a folder "
            f"name relative to the run; everything a run writes stays inside the run directory."
        )
    return target


def relative_inside(path: object, key: str, where: str) -> None:
    """Refuse, at ``validate`` time, a recipe path meant to lie inside the run but written to leave it."""
    text = str(path)
    if os.path.isabs(text) or os.path.normpath(text).split(os.sep)[0] == "..":
        raise RecipeError(
            f"{where}: {key}: '{text}' leaves the run directory; give a folder name relative to the "
            f"run (everything a run writes stays inside the run directory)."
        )


def temporary_path(path: str | os.PathLike) -> Path:
    """Where an atomic write of `path` goes first: ``.<name>.tmp-<pid>`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temporary(path: str | os.PathLike) -> bool:
    """True for any file an atomic write (of this or an earlier version) may leave behind."""
    name = Path(path).name
    return bool(TEMPORARY.match(name) or LEGACY_TEMPORARY.search(name))


def is_data_file(path: str | os.PathLike) -> bool:
    """Listings take neither hidden files nor temporaries for data."""
    name = Path(path).name
    return not name.startswith(".") and not is_temporary(name)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise named(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def named(exc: OSError, path: str | os.PathLike) -> OSError:
    """The OSError of a write (a full disk) naming the file it was writing, so that its one line does."""
    return OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(path))


def process_exists(pid: int) -> bool:
    """Whether a process with this pid exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has only just started: a file with its pid is an old one
    return process_exists(pid)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of interrupted writes under `folder`; a living writer's are kept."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink() or not is_temporary(path):
            continue
        match = TEMPORARY.match(path.name)
        if match and _alive(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
