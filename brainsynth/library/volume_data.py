"""Volume datasets over NIfTI subjects: the ready-made `DataSource`, with caching.

`VolumeSource` turns each split into a torch Dataset by the MONAI chains of
`brainsynth.library.volume_transforms`, with ``cache: none | memory | disk`` (MONAI CacheDataset /
PersistentDataset holding the deterministic part of the chain, so a cached volume is never
re-read or re-transformed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from brainsynth.core.data import DataSource, Subject
from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.run_log import warn

from .volume_transforms import (
    IMAGE_KEY,
    TransformSettings,
    VolumeError,
    find_brainsynth_error,
    finishing_transforms,
    is_constant_volume,
    preprocessing_transforms,
)

CacheMode = Literal["none", "memory", "disk"]


def cache_root() -> Path:
    """Where brainsynth caches data: ``$BRAINSYNTH_CACHE``, else ``$XDG_CACHE_HOME/brainsynth``."""
    if os.environ.get("BRAINSYNTH_CACHE"):
        return Path(os.environ["BRAINSYNTH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "brainsynth"


class VolumeDataset(torch.utils.data.Dataset):
    """Items of a (possibly cached) preprocessed dataset, finished by the rest of the chain.

    A `BrainsynthError` raised anywhere inside MONAI's wrapped transforms is re-raised as it is,
    so the user reads one message naming the file.
    """

    def __init__(self, base: Sequence, finishing: Compose) -> None:
        self.base = base
        self.finishing = finishing

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from monai.transforms import apply_transform

        error = None
        try:
            item = apply_transform(self.finishing, self.base[index])
        except Exception as exc:
            error = find_brainsynth_error(exc)
            if error is None:
                raise
        if error is not None:
            raise error
        item.pop("stamp", None)
        return item


class VolumeSource(DataSource):
    """A `DataSource` over NIfTI subjects with the standard chains and optional caching.

    `cache`: ``none`` reads every volume at every access; ``memory`` keeps each split's
    preprocessed volumes in RAM (MONAI CacheDataset, filled when the split is first asked for);
    ``disk`` keeps them under `cache_dir` (MONAI PersistentDataset; default
    ``cache_root()/volumes/<hash of the preprocessing settings>``), keyed by path, size and
    modification time, so an edited file is read again. Augmentation and the clamp always run
    after the cache, so a cached volume is augmented afresh each time.
    """

    def __init__(
        self,
        splits: Mapping[str, Sequence[Subject]],
        settings: TransformSettings,
        cache: CacheMode = "none",
        cache_dir: str | os.PathLike | None = None,
        conditioning_table: str | os.PathLike | None = None,
        skip_constant: bool = False,
    ) -> None:
        if cache not in ("none", "memory", "disk"):
            raise RecipeError(f"cache: expected 'none', 'memory' or 'disk', got {cache!r}.")
        self._splits = {name: list(subjects) for name, subjects in splits.items()}
        self.skip_constant = skip_constant
        """Leave out volumes whose voxels all hold one value, with a warning (else they are an error)."""
        self._checked: set[str] = set()
        self.settings = settings
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.roi_size = settings.roi.size if settings.roi is not None else None
        self.conditioning_table = Path(conditioning_table) if conditioning_table is not None else None
        self._bases: dict[str, Sequence] = {}
        self._datasets: dict[tuple[str, bool], VolumeDataset] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def subjects(self, name: str) -> list[Subject]:
        if name not in self._splits:
            raise DataError(
                f"this dataset has no '{name}' split; it has: {', '.join(self._splits)}. "
                f"Add '{name}:' to the recipe's data block."
            )
        if self.skip_constant and name not in self._checked:
            self._splits[name] = self._without_constant(name, self._splits[name])
            self._checked.add(name)
        return list(self._splits[name])

    @staticmethod
    def _without_constant(name: str, subjects: list[Subject]) -> list[Subject]:
        """`subjects` less those whose volume is constant (each file read once, when first listed)."""
        kept, skipped = [], []
        for subject in subjects:
            try:
                constant = is_constant_volume(subject.path)
            except Exception:  # noqa: BLE001 - unreadable files are reported by the loader, in its words
                constant = False
            (skipped if constant else kept).append(subject)
        if skipped:
            names = ", ".join(str(s.path) for s in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            warn(f"{name}: {len(skipped)} constant volume(s) left out (data.skip_constant): {names}")
            if not kept:
                raise DataError(f"{name}: every volume of this split is constant ({names}); nothing is left to use.")
        return kept

    def split(self, name: str, train: bool = False) -> torch.utils.data.Dataset:
        key = (name, bool(train))
        if key not in self._datasets:
            from monai.transforms import Compose  # MONAI is imported when data is read, not when a recipe is checked

            finishing = Compose(finishing_transforms(self.settings, train=train))
            self._datasets[key] = VolumeDataset(self._base(name), finishing)
        return self._datasets[key]

    def disk_cache_folder(self) -> Path:
        """Where ``cache: disk`` keeps preprocessed volumes for these settings."""
        if self.cache_dir is not None:
            return self.cache_dir
        key = json.dumps(self.settings.preprocessing_key(), sort_keys=True).encode()
        return cache_root() / "volumes" / hashlib.sha1(key).hexdigest()[:16]

    def _base(self, name: str) -> Sequence:
        if name in self._bases:
            return self._bases[name]
        from monai.data import CacheDataset, PersistentDataset
        from monai.data import Dataset as MonaiDataset
        from monai.transforms import Compose

        items = [{IMAGE_KEY: str(s.path), "subject": s.name, "path": str(s.path)} for s in self.subjects(name)]
        transform = Compose(preprocessing_transforms(self.settings))
        error = None
        try:
            if self.cache == "memory":
                base: Sequence = CacheDataset(
                    items, transform, cache_rate=1.0, num_workers=None, progress=False, copy_cache=True
                )
            elif self.cache == "disk":
                for item in items:
                    item["stamp"] = _file_stamp(Path(item["path"]))
                base = PersistentDataset(items, transform, cache_dir=self.disk_cache_folder())
            else:
                base = MonaiDataset(items, transform)
        except Exception as exc:  # CacheDataset loads every volume now
            error = find_brainsynth_error(exc)
            if error is None:
                raise
        if error is not None:
            raise error
        self._bases[name] = base
        return base


def _file_stamp(path: Path) -> str:
    """Size and modification time: part of a disk-cache key, so an edited file is read again."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise VolumeError(
            f"{path}: cannot read this image ({type(exc).__name__}: {exc.strerror}). "
            "Fix the path or remove the subject."
        ) from exc
    return f"{stat.st_size}:{stat.st_mtime_ns}"
