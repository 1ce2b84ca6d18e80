"""Faults and recovery: a corrupt last checkpoint, a full disk, SIGKILL of extract, sample and likelihood.

Each case ends bit-identical to an uninterrupted run (checkpoint tensors, token grids, samples
and maps by sha256) or refuses in one line, and loses no finished file. Kills of training are in
test_resume_tokenizer.py and test_distributed_transformer.py (and, at random moments and under
2 processes, in benchmarks/faults.py).
"""

from __future__ import annotations

import errno
import shutil

import pytest
import torch
from _faults import (COHORT, PRIOR, TOKENIZER, corrupt, enospc_after, files_written, finished, full_disk, kill_when,
                     losses, start)
from _toy_plugin import recipe_text
from conftest import one_line_error

from brainsynth.core.checkpoint import read_checkpoint, save_checkpoint

NO_SPACE = "No space left on device"


def refusal(result) -> str:
    """The run stopped with exit 2 and one 'error: ...' line (after any progress lines), no traceback."""
    assert result.code == 2 and "Traceback" not in result.err, result
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.err.splitlines()[-1] == errors[0], result.err
    return errors[0]


def checkpoints_of(run_dir) -> dict[str, str]:
    return {name: digest for name, digest in finished(run_dir).items() if name.endswith(".pt")}


# -- a corrupt last checkpoint ----------------------------------------------------------------------
@pytest.fixture
def toy_runs(toy, run_cli, tmp_path, token_grids):
    """Two finished toy runs of one recipe (6 steps, last.pt after every step): 'through' and 'faulted'."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=2))
    for name in ("through", "faulted"):
        result = run_cli("run", str(recipe), "--set", f"experiment.name={name}", "--set", "train.checkpoint_every=1")
        assert result.code == 0, result
    return recipe, tmp_path / "runs" / "through", tmp_path / "runs" / "faulted"


def test_a_corrupt_last_checkpoint_resumes_from_the_previous_one_bit_identical(toy_runs, run_cli):
    recipe, through, faulted = toy_runs
    checkpoints = faulted / "checkpoints"
    assert read_checkpoint(checkpoints / "previous.pt")["step"] == 5  # the save before last.pt's (step 6)
    corrupt(checkpoints / "last.pt")
    result = run_cli("run", str(recipe), "--set", "experiment.name=faulted", "--set", "train.checkpoint_every=1",
                     "--resume")
    assert result.code == 0, result
    warning = [line for line in result.out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "last.pt cannot be read" in warning[0] and "previous.pt" in warning[0], result.out
    assert "(step 5)" in warning[0]
    assert checkpoints_of(faulted) == checkpoints_of(through)  # last, previous and best: tensors equal


def test_a_corrupt_last_and_previous_checkpoint_refuse_in_one_line(toy_runs, run_cli):
    recipe, _, faulted = toy_runs
    for name in ("last.pt", "previous.pt"):
        corrupt(faulted / "checkpoints" / name)
    before = {p: p.read_bytes() for p in faulted.rglob("*") if p.is_file()}
    result = run_cli("run", str(recipe), "--set", "experiment.name=faulted", "--set", "train.checkpoint_every=1",
                     "--resume")
    assert "last.pt: not a readable checkpoint" in one_line_error(result)
    assert {p: p.read_bytes() for p in faulted.rglob("*") if p.is_file()} == before


def test_a_full_disk_during_a_checkpoint_write_keeps_the_last_one_and_resumes_bit_identical(toy_runs, run_cli):
    recipe, through, _ = toy_runs
    runs = through.parent
    size = (through / "checkpoints" / "last.pt").stat().st_size
    args = ("run", str(recipe), "--set", "experiment.name=full", "--set", "train.checkpoint_every=1")
    with enospc_after(runs / "full", budget=size * 3 // 2, pattern=".last.pt.tmp-*") as disk:  # the 2nd save fails
        result = run_cli(*args)
    line = refusal(result)
    assert disk.hits and NO_SPACE in line and "last.pt" in line
    checkpoints = runs / "full" / "checkpoints"
    assert read_checkpoint(checkpoints / "last.pt")["step"] == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]  # no temporary left behind
    assert run_cli(*args, "--resume").code == 0
    assert checkpoints_of(runs / "full") == checkpoints_of(through)


def test_a_really_full_disk_during_a_checkpoint_write_is_reported_as_such(tmp_path):
    """On a full tmpfs torch's writer turns ENOSPC into a RuntimeError about file positions; the
    save must report the OSError (one line: 'No space left on device') and leave the old file."""
    with full_disk(tmp_path / "disk", 64 << 10) as resize:
        if resize is None:
            pytest.skip("no tmpfs can be mounted here (the in-process ENOSPC cases above still run)")
        path = tmp_path / "disk" / "last.pt"
        save_checkpoint(path, task="toy", recipe="", modules={"m": torch.nn.Linear(8, 8)})
        written = path.read_bytes()
        with pytest.raises(OSError) as error:
            save_checkpoint(path, task="toy", recipe="", modules={"m": torch.nn.Linear(200, 200)})
        assert error.value.errno == errno.ENOSPC
        assert path.read_bytes() == written and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


# -- extract, sample, likelihood ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A trained tokenizer and prior (in-process, seconds), with copies of each run as it stood
    before extract, sample and likelihood, and each mode's finished files as references."""
    from brainsynth import cli
    from brainsynth.plugins.datasets.demo_cohort import build_demo_cohort

    base = tmp_path_factory.mktemp("faults")
    cohort = build_demo_cohort(base / "cohort", **COHORT)
    runs = base / "runs"
    recipes = {"tok": base / "tok.yaml", "prior": base / "prior.yaml"}
    recipes["tok"].write_text(TOKENIZER.format(root=runs, cohort=cohort))
    recipes["prior"].write_text(PRIOR.format(root=runs, tokens=runs / "tok" / "tokens"))
    before, reference = {}, {}
    for stage, mode in (("tok", "train"), ("tok", "extract"), ("prior", "train"), ("prior", "sample"),
                        ("prior", "likelihood")):
        if mode != "train":
            before[mode] = base / "before" / mode / stage
            shutil.copytree(runs / stage, before[mode])
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["run", str(recipes[stage]), "--mode", mode])
        assert exit_info.value.code == 0, (stage, mode)
        reference[mode] = finished(runs / stage)
    return recipes, before, reference


MODES = {  # mode -> the recipe's stage, the folder its files go to, and the name of one of them
    "extract": ("tok", "tokens/train", "sub-0004.npy"),
    "sample": ("prior", "samples", "sample_00003.nii.gz"),
    "likelihood": ("prior", "likelihood/train", "sub-0004.nii.gz"),
}


def copy_before(chain, mode, root):
    """The run as it stood before `mode`, under `root`; returns its directory and recipe arguments."""
    recipes, before, _ = chain
    stage = MODES[mode][0]
    shutil.copytree(before[mode], root / stage)
    return root / stage, ("run", str(recipes[stage]), "--mode", mode, "--set", f"experiment.root={root}")


FULL_DISK = [  # (mode, the file whose write fails); data files after some of theirs are finished
    ("extract", ".sub-0004.npy.tmp-*"),
    ("sample", ".sample_00003.nii.gz.tmp-*"),
    ("sample", "*samples.csv*"),  # written before samples.json, which marks the folder as claimed
    ("likelihood", ".sub-0004.nii.gz.tmp-*"),
    ("likelihood", ".train.csv.tmp-*"),
]


@pytest.mark.parametrize("mode, failing", FULL_DISK, ids=[f"{m}-{f.strip('.*').split('.tmp')[0]}" for m, f in FULL_DISK])
def test_a_full_disk_during_a_mode_keeps_finished_files_and_a_rerun_ends_bit_identical(
    chain, mode, failing, tmp_path, run_cli
):
    run_dir, args = copy_before(chain, mode, tmp_path)
    with enospc_after(tmp_path, budget=0, pattern=failing) as disk:
        result = run_cli(*args)
    line = refusal(result)
    assert disk.hits and NO_SPACE in line and failing.strip(".*").split(".tmp")[0] in line  # names the file
    kept = finished(run_dir)
    if "sub-" in failing or "sample_" in failing:
        assert any(name.startswith(MODES[mode][1]) for name in kept), "nothing was finished before the disk filled"
    assert not list(run_dir.rglob(".*.tmp-*")), "a temporary file was left behind"
    assert run_cli(*args).code == 0
    assert losses(kept, finished(run_dir)) == []
    assert finished(run_dir) == chain[2][mode]


def test_a_full_disk_while_extract_rewrites_tokens_json_keeps_the_previous_one(chain, tmp_path, run_cli):
    run_dir, args = copy_before(chain, "extract", tmp_path)
    assert run_cli(*args).code == 0
    meta = run_dir / "tokens" / "train" / "tokens.json"
    written = meta.read_bytes()
    with enospc_after(tmp_path, budget=0, pattern="*tokens.json*"):
        assert NO_SPACE in refusal(run_cli(*args))
    assert meta.read_bytes() == written


@pytest.mark.slow  # a subprocess, killed
@pytest.mark.parametrize("mode", MODES)
def test_a_killed_mode_reruns_to_a_bit_identical_ending_and_loses_nothing(chain, mode, tmp_path, run_cli):
    stage, folder, _ = MODES[mode]
    run_dir, args = copy_before(chain, mode, tmp_path)
    pattern = "*.npy" if mode == "extract" else "*.nii.gz"
    assert kill_when(start(list(args)), files_written(run_dir / folder, pattern, 2)), "the run ended before the kill"
    kept = finished(run_dir)
    result = run_cli(*args)
    assert result.code == 0, result
    assert losses(kept, finished(run_dir)) == []
    assert finished(run_dir) == chain[2][mode]
