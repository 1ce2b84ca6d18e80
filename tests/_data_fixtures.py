"""Helpers and shared fixtures of the data tests: tiny NIfTI files and one tiny demo cohort.

Import the fixtures into a test module (``from _data_fixtures import tiny_cohort``). The cohort
is built once per session into a fixed folder under pytest's base temp; a second module asking
for it reuses the identical cohort already there (the demo cohort's own reuse rule).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_COHORT = {"subjects": 20, "spacing": 4.0, "seed": 3, "val_fraction": 0.2}


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save `array` as NIfTI (``.nii`` or ``.nii.gz`` by `path`'s name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def shifted_affine(spacing: float = 2.0, origin=(-10.0, -20.0, -30.0)) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return affine


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 20-subject demo cohort at 4 mm (about 3 s to build)."""
    from brainsynth.plugins.datasets.demo_cohort import build_demo_cohort

    return build_demo_cohort(tmp_path_factory.getbasetemp() / "tiny_cohort", **TINY_COHORT)
