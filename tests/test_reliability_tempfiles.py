"""Temporary files are never data: their names match no data pattern, listings skip them, and an
interrupted write's leftovers are removed when the next mode starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _toy_plugin import recipe_text
from conftest import write_token_grids

from brainsynth.core.data import list_subjects

DATA_SUFFIXES = (".nii", ".nii.gz", ".npy", ".png", ".csv", ".json", ".pt")


@pytest.fixture
def renamed(monkeypatch):
    """Every temporary file renamed onto its final name, as (temporary name, final name)."""
    seen: list[tuple[str, str]] = []
    original = Path.replace

    def replace(self, target):
        seen.append((Path(self).name, Path(target).name))
        return original(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    return seen


def assert_not_data(name: str) -> None:
    assert name.startswith("."), name
    assert not name.lower().endswith(DATA_SUFFIXES), name


def test_nifti_writes_use_names_no_listing_takes_for_data(tmp_path, renamed):
    from brainsynth.plugins.tasks.prior import volumes
    from brainsynth.plugins.tasks.tokenizer import volume_files

    volume = torch.rand(1, 4, 5, 6)
    volumes.write_nifti(tmp_path / "a.nii.gz", volume, np.eye(4))
    volume_files.write_volume(tmp_path / "b.nii.gz", volume, np.eye(4))
    volumes.write_nifti(tmp_path / "c.nii", volume, np.eye(4))
    volumes.write_png(tmp_path / "d.png", np.zeros((4, 4)))
    assert [final for _, final in renamed] == ["a.nii.gz", "b.nii.gz", "c.nii", "d.png"]
    for temporary, _ in renamed:
        assert_not_data(temporary)
    for name in ("a.nii.gz", "b.nii.gz", "c.nii"):
        read = nib.load(tmp_path / name).get_fdata()
        assert np.allclose(read, volume[0].numpy(), atol=1e-6)
    assert nib.load(tmp_path / "c.nii").header.get_data_dtype() == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii", "d.png"]


def test_listings_skip_leftovers_of_interrupted_writes(tmp_path):
    from brainsynth.plugins.datasets.tokens import TokenDataset

    volumes = tmp_path / "volumes"
    volumes.mkdir()
    image = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    nib.save(image, volumes / "sub-0001.nii.gz")
    nib.save(image, volumes / "sub-0001.nii.gz.tmp.nii.gz")  # left by a killed decode of an older version
    assert [s.name for s in list_subjects(volumes)] == ["sub-0001"]
    tokens = write_token_grids(tmp_path / "tokens", count=3)
    np.save(tokens / ".subject00.tmp.npy", np.zeros((3, 4, 2), dtype=np.uint16))
    np.save(tokens / "subject01.npy.tmp.npy", np.zeros((3, 4, 2), dtype=np.uint16))
    data = TokenDataset(train=str(tokens))
    assert [s.name for s in data.subjects("train")] == ["subject00", "subject01", "subject02"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_are_removed_when_the_next_mode_starts(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    run = tmp_path / "runs" / "toy"
    pid = _dead_pid()
    leftovers = [
        run / "checkpoints" / f".last.pt.tmp-{pid}",
        run / "samples" / f".sample_0001.nii.gz.tmp-{pid}",
        run / "decoded" / "sub-0001.nii.gz.tmp.nii.gz",
        run / "decoded" / ".sub-0002.nii.gz.tmp.nii.gz",
        run / "likelihood" / "grid" / ".subject00.npy.tmp",
    ]
    kept = [run / "decoded" / "sub-0003.nii.gz", run / "decoded" / ".keep"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    result = run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2")
    assert result.code == 0, result
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert "removed 5 files left by interrupted writes" in result.out
