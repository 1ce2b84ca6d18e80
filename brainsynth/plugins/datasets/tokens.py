"""Pre-extracted token grids: one ``.npy`` integer grid per subject, as ``extract`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainsynth.core.data import DataSource, Subject
from brainsynth.library.subjects import subject_name
from brainsynth.core.errors import DataError
from brainsynth.core.run_log import warn
from brainsynth.library.token_files import META_FILE, listed_grids, read_meta, stale_note


def _list_token_files(source: Path) -> list[Path]:
    if source.is_dir():
        files, stale = listed_grids(source)
        if not files:
            raise DataError(f"{source}: no .npy token grids in this folder. Run the tokenizer's extract mode first.")
        if stale:
            warn(stale_note(source, stale, len(files)))
        return files
    if source.suffix in (".csv", ".tsv"):
        import csv

        with open(source, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if source.suffix == ".tsv" else ","))
        if not rows or "path" not in rows[0]:
            raise DataError(f"{source}: a token table needs a 'path' column.")
        files = [(source.parent / row["path"]).resolve() for row in rows]
        for f in files:
            if not f.is_file():
                raise DataError(f"{source}: listed token file {f} does not exist.")
        return files
    raise DataError(f"{source}: expected a folder of .npy token grids or a csv/tsv with a 'path' column.")


class TokenGrids(torch.utils.data.Dataset):
    """Items are ``{"tokens": LongTensor [*grid], "subject": name}``; values checked on load."""

    def __init__(self, files: list[Path], num_embeddings: int, grid: tuple[int, ...] | None = None) -> None:
        self.files = files
        self.num_embeddings = num_embeddings
        self.grid = tuple(grid) if grid is not None else None
        """The shape every grid must have (the first train grid's): a batch cannot mix shapes."""

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        grid = read_grid(path)
        if not np.issubdtype(grid.dtype, np.integer):
            raise DataError(f"{path}: token grids hold integers, this file holds {grid.dtype}.")
        if self.grid is not None and tuple(grid.shape) != self.grid:
            raise DataError(
                f"{path}: token grid of shape {list(grid.shape)}, but the first training grid's "
                f"shape is {list(self.grid)}. The grids come from different tokenizers or "
                f"ROIs; extract them all with one tokenizer into a fresh folder."
            )
        if grid.size and (grid.min() < 0 or grid.max() >= self.num_embeddings):
            raise DataError(
                f"{path}: token {int(grid.max()) if grid.max() >= self.num_embeddings else int(grid.min())} "
                f"is outside the codebook [0, {self.num_embeddings}). The grid comes from another tokenizer."
            )
        return {"tokens": torch.from_numpy(grid.astype(np.int64)), "subject": subject_name(path)}


def read_grid(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A token grid file, or a `DataError` naming it (a truncated or foreign file is the user's to fix)."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read this token grid ({type(exc).__name__}: {str(exc)[:120]}); "
                        "extract it again, or remove it and its line in tokens.json.") from None


class TokenDataset(DataSource):
    """Token grids for training a prior, split into train and (optionally) val."""

    def __init__(self, train: str, val: str | None = None, num_embeddings: int | None = None) -> None:
        self.sources = {"train": Path(train)}
        if val is not None:
            self.sources["val"] = Path(val)
        self.files = {name: _list_token_files(path) for name, path in self.sources.items()}
        meta = self._meta(self.sources["train"])
        if num_embeddings is None:
            num_embeddings = meta.get("num_embeddings")
        if num_embeddings is None:
            raise DataError(
                f"{self.sources['train']}: codebook size unknown. Give data.num_embeddings, or keep the "
                f"{META_FILE} that extract writes beside the grids."
            )
        self.num_embeddings = int(num_embeddings)
        first = read_grid(self.files["train"][0], mmap_mode="r")
        self.grid = tuple(int(s) for s in first.shape)
        recorded = meta.get("grid")
        if recorded is not None and tuple(int(g) for g in recorded) != self.grid:
            raise DataError(
                f"{self.files['train'][0]}: token grid of shape {list(self.grid)}, but {META_FILE} records the "
                f"tokenizer's grid {list(recorded)}. The grid comes from another tokenizer or ROI; extract "
                f"again with one tokenizer into a fresh folder."
            )
        self.tokenizer_run: str | None = meta.get("tokenizer_run")
        """The tokenizer run that extracted the grids: what a prior decodes its samples through."""
        table = meta.get("conditioning_table")
        self.conditioning_table = Path(table) if table else None

    @staticmethod
    def _meta(source: Path) -> dict:
        return read_meta(source if source.is_dir() else source.parent)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def subjects(self, name: str) -> list[Subject]:
        return [Subject(subject_name(path), path) for path in self._files(name)]

    def _files(self, name: str) -> list[Path]:
        if name not in self.files:
            raise DataError(f"data: no '{name}' split; give data.{name}.")
        return self.files[name]

    def space(self, name: str, subject: str) -> dict | None:
        """``{"spatial_shape", "affine"}`` of the volume a subject's grid was extracted from, if recorded."""
        meta = self._meta(self.sources[name]) if name in self.sources else {}
        space = dict(meta.get("space") or {})
        affine = (meta.get("affines") or {}).get(subject_name(subject))
        if affine is not None:
            space["affine"] = affine
        return space or None

    def split(self, name: str, train: bool = False) -> TokenGrids:
        return TokenGrids(self._files(name), self.num_embeddings, self.grid)
