"""Folders of token grids: the ``tokens.json`` that ``extract`` writes beside them, and which grids it lists.

Shared by the tokenizer task (which writes and decodes grids) and the ``tokens`` dataset (which
reads them), so that a grid left over from another extract, or a temporary file, is never data.
This is the one module that reads and writes ``tokens.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from brainsynth.core.errors import DataError
from brainsynth.core.files import is_data_file, write_bytes_atomic

META_FILE = "tokens.json"
"""Written by ``extract`` beside the grids: codebook size ``num_embeddings``, ``grid``, the
``subjects`` it extracted, the training ``space`` (affine, spatial shape), per-subject
``affines``, the ``tokenizer_run`` that wrote them and the source data's ``conditioning_table``
(None when it has none)."""


def read_meta(folder: Path) -> dict:
    """The ``tokens.json`` of a folder of grids ({} when there is none)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); extract the token grids again.") from None


def write_meta(folder: Path, meta: dict) -> Path:
    """Write `meta` as the ``tokens.json`` of a folder of grids, atomically."""
    return write_bytes_atomic(Path(folder) / META_FILE, json.dumps(meta).encode())


def listed_grids(folder: Path) -> tuple[list[Path], list[Path]]:
    """The grids of a folder that its ``tokens.json`` lists, and the other ``.npy`` files (stale).

    ``extract`` records the subjects it wrote (older versions: the keys of ``affines``); a grid
    left there by an earlier extract of other data is stale and never read. Without a
    ``tokens.json`` every ``.npy`` grid is taken. A listed grid that is missing is an error.
    """
    folder = Path(folder)
    present = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file() and is_data_file(p))
    meta = read_meta(folder)
    names = meta.get("subjects")
    if names is None and isinstance(meta.get("affines"), dict):
        names = list(meta["affines"])
    if names is None:
        return present, []
    listed = set(names)
    missing = sorted(listed - {p.stem for p in present})
    if missing:
        raise DataError(
            f"{folder}: {META_FILE} lists {len(listed)} token grids but {len(missing)} are missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); extract the split again."
        )
    return [p for p in present if p.stem in listed], [p for p in present if p.stem not in listed]


def stale_note(folder: Path, stale: list[Path], listed: int) -> str:
    """The warning for grids that ``tokens.json`` does not list."""
    return (
        f"{folder}: {len(stale)} .npy file(s) not listed in {META_FILE} ({', '.join(p.name for p in stale[:3])}"
        f"{', ...' if len(stale) > 3 else ''}) are left over from another extract and not read; "
        f"{listed} listed grid(s) are used. Delete them or extract into a fresh folder."
    )
