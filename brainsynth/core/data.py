"""The dataset contract: what a ``dataset`` component builds, and the subjects and conditioning
variables it is described by.

* A `dataset` component builds a `DataSource`: named splits of `Subject`s, each turned into a
  torch Dataset of ``{"image": MetaTensor [1, X, Y, Z] float32 (with its affine), "subject": str,
  "path": str}``. `brainsynth.library.volume_data.VolumeSource` is the ready-made implementation
  over NIfTI files (subject lists: `brainsynth.library.subjects`).
* A `Variable` names one column of the conditioning table
  (`brainsynth.library.conditioning_table`) and how it is encoded.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass
class Variable:
    """One conditioning variable, read from a column of the conditioning table."""

    column: str
    kind: Literal["continuous", "categorical"] = "continuous"
    normalize: Literal["minmax", "zscore", "none"] = "minmax"
    """``none`` feeds the table's values as they are: the original BrainSynth never normalised in code,
    so priors imported from it read raw (already pre-processed) values."""
    equalize: bool = False


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject: its name (the file name without extension) and its volume file."""

    name: str
    path: Path


class DataSource(abc.ABC):
    """What a ``dataset`` component builds: named splits of subjects, and datasets over them.

    Tasks rely on this API only:

    * `splits`: the split names, e.g. ``("train", "val")``;
    * `subjects(name)`: the subjects of a split, in a fixed order;
    * `split(name, train=False)`: a torch Dataset of ``{"image": MetaTensor [1, X, Y, Z] float32,
      "subject": str, "path": str}``; ``train=True`` gives the training chain (augmented when
      the recipe asks), ``train=False`` the evaluation chain, which never augments;
    * `roi_size`: the spatial size of every image, or None when images keep their own size;
    * `conditioning_table`: a conditioning table that comes with the data, or None.
    """

    roi_size: tuple[int, int, int] | None = None
    conditioning_table: Path | None = None

    @property
    @abc.abstractmethod
    def splits(self) -> tuple[str, ...]:
        """The split names."""

    @abc.abstractmethod
    def subjects(self, name: str) -> list[Subject]:
        """The subjects of split `name`."""

    @abc.abstractmethod
    def split(self, name: str, train: bool = False) -> torch.utils.data.Dataset:
        """The dataset of split `name` with the training (``train=True``) or evaluation chain."""


__all__ = ["DataSource", "Subject", "Variable"]
