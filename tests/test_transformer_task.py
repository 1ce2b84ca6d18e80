"""The transformer task end to end on the tiny demo cohort: train -> sample -> decode, likelihood."""

from __future__ import annotations

import collections
import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)

from brainsynth.core import distributed
from brainsynth.core.plugins import registry
from brainsynth.core.recipe import load_recipe
from brainsynth.core.runner import Run

TOKENIZER = """\
task: tokenizer
experiment: {{name: tok, root: {root}}}
seed: 1
data: {{name: nifti, train: {cohort}/train.tsv, val: {cohort}/val.tsv, roi: [48, 56, 48], cache: memory,
       conditioning_table: {cohort}/conditioning.tsv}}
network:
  name: baseline_vqvae
  channels: 8
  levels: 3
  num_res_layers: 1
  embedding_dim: 4
  codebook: {{name: ema, num_embeddings: 16}}
loss: {{name: mse}}
optimizer: {{lr: 0.003}}
train: {{epochs: 1, batch_size: 4, log_every: 1}}
"""

PRIOR = """\
task: transformer
experiment: {{name: {name}, root: {root}}}
seed: 2
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
ordering: {{name: raster_scan}}
conditioning:
  name: cross_attend
  variables:
    - {{column: ventricular_volume}}
    - {{column: age}}
    - {{column: sex, kind: categorical}}
network: {{name: xtransformer, dim: 32, depth: 1, heads: 2, attn_dim_head: 16}}
optimizer: {{lr: 0.003}}
train: {{epochs: 2, batch_size: 4, log_every: 1}}
"""


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, tiny_cohort):  # noqa: F811
    from brainsynth import cli

    root = tmp_path_factory.mktemp("prior")
    tokenizer = root / "tok.yaml"
    tokenizer.write_text(TOKENIZER.format(root=root / "runs", cohort=tiny_cohort))
    prior = root / "prior.yaml"
    prior.write_text(PRIOR.format(name="prior", root=root / "runs", tokens=root / "runs" / "tok" / "tokens"))
    for args in (["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"], ["run", str(prior)]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0, args
    return prior, root / "runs" / "prior", root / "runs" / "tok"


def test_training_records_what_sampling_needs(prior_run):
    _, run_dir, tok_dir = prior_run
    meta = json.loads((tok_dir / "tokens" / "train" / "tokens.json").read_text())
    assert meta["tokenizer_run"] == str(tok_dir.resolve()) and meta["conditioning_table"].endswith("conditioning.tsv")
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    extra = state["extra"]
    assert extra["grid"] == [6, 7, 6] and extra["num_embeddings"] == 16
    assert [m["variable"]["column"] for m in extra["conditioning"]["mappings"]] == ["ventricular_volume", "age", "sex"]
    assert extra["conditioning"]["mappings"][2]["levels"] == [0, 1]
    assert torch.equal(extra["ordering"]["sequence_order"], torch.arange(6 * 7 * 6))


def test_sample_over_a_grid_decodes_and_resumes(prior_run, run_cli):
    path, run_dir, tok_dir = prior_run
    grid = "sample.grid={ventricular_volume: [10, 40], age: [50, 80]}"
    args = ("run", str(path), "--mode", "sample", "--set", grid, "--set", "sample.fixed={sex: 1}",
            "--set", "sample.batch_size=3", "--set", "sample.top_k=8")
    result = run_cli(*args)
    assert result.code == 0, result
    folder = run_dir / "samples"
    rows = list(csv.DictReader(open(folder / "samples.csv")))
    assert [(r["ventricular_volume"], r["age"], r["sex"]) for r in rows] == [
        ("10", "50", "1"), ("10", "80", "1"), ("40", "50", "1"), ("40", "80", "1")]
    tokens_meta = json.loads((tok_dir / "tokens" / "train" / "tokens.json").read_text())
    for row in rows:
        image = nib.load(folder / row["file"])
        assert image.shape == (48, 56, 48)
        np.testing.assert_allclose(image.affine, np.asarray(tokens_meta["space"]["affine"]))
        grid_tokens = np.load(folder / "tokens" / row["file"].replace(".nii.gz", ".npy"))
        assert grid_tokens.shape == (6, 7, 6) and grid_tokens.max() < 16  # BOS (16) never sampled
        assert (folder / "png" / row["file"].replace(".nii.gz", ".png")).is_file()

    # A second run skips what is there; a lost sample is redrawn exactly as before.
    first = folder / "sample_00000.nii.gz"
    last = folder / "sample_00003.nii.gz"
    expected = nib.load(last).get_fdata()
    last.unlink()
    stamp = os.stat(first).st_mtime_ns
    result = run_cli(*args)
    assert result.code == 0, result
    assert "3 sample(s) already in" in result.out
    assert os.stat(first).st_mtime_ns == stamp
    np.testing.assert_array_equal(nib.load(last).get_fdata(), expected)

    # Other settings never write into the same folder.
    result = run_cli(*args, "--set", "sample.temperature=0.5")
    assert result.code == 2 and "holds samples drawn with other settings" in result.err


def test_sample_needs_conditions_for_a_conditioned_prior(prior_run, run_cli):
    path, _, _ = prior_run
    result = run_cli("run", str(path), "--mode", "sample", "--set", "sample.output=none_given")
    assert result.code == 2
    assert "give exactly one of sample.values, sample.grid or sample.split" in result.err
    result = run_cli("run", str(path), "--mode", "sample", "--set", "sample.values=[{age: 60, sex: 0}]",
                     "--set", "sample.output=partial")
    assert result.code == 2 and "ventricular_volume" in result.err
    result = run_cli("run", str(path), "--mode", "sample", "--set", "sample.values=[{age: 60, sex: 2, ventricular_volume: 9}]",
                     "--set", "sample.output=unseen")
    assert result.code == 2 and "sex" in result.err and "not seen in training" in result.err


def test_sample_from_split_values(prior_run, run_cli):
    path, run_dir, _ = prior_run
    result = run_cli("run", str(path), "--mode", "sample", "--set", "sample.split=val",
                     "--set", "sample.output=val_like", "--set", "sample.png=false")
    assert result.code == 0, result
    rows = list(csv.DictReader(open(run_dir / "val_like" / "samples.csv")))
    meta = json.loads((run_dir.parent / "tok" / "tokens" / "val" / "tokens.json").read_text())
    table = {r["subject"]: r for r in csv.DictReader(open(meta["conditioning_table"]), delimiter="\t")}
    val_subjects = sorted(p.stem for p in (run_dir.parent / "tok" / "tokens" / "val").glob("*.npy"))
    assert len(rows) == len(val_subjects) == 4
    assert [float(r["age"]) for r in rows] == [float(table[s]["age"]) for s in val_subjects]


def test_likelihood_maps_match_teacher_forced_log_probabilities(prior_run, run_cli):
    path, run_dir, tok_dir = prior_run
    result = run_cli("run", str(path), "--mode", "likelihood", "--set", "likelihood.splits=[val]",
                     "--set", "likelihood.upsample=nearest")
    assert result.code == 0, result
    subject = sorted((tok_dir / "tokens" / "val").glob("*.npy"))[0].stem
    written = np.load(run_dir / "likelihood" / "val" / "grid" / f"{subject}.npy")

    # Recompute with the network directly: teacher forcing, log-softmax, and the raster order by hand.
    from brainsynth.plugins.tasks.prior.trained import trained_prior

    recipe = load_recipe(path, registry(), mode="likelihood")
    run = Run(recipe=recipe, directory=run_dir, registry=registry(), dist=distributed.setup("cpu"))
    parts = trained_prior(run, "best")
    tokens = torch.from_numpy(np.load(tok_dir / "tokens" / "val" / f"{subject}.npy").astype(np.int64))
    target = tokens.reshape(1, -1)  # raster order is the row-major grid order
    inputs = torch.cat([torch.tensor([[16]]), target[:, :-1]], dim=1)
    table = parts.table
    values = table.to_columns(table.encode_subjects([subject]))
    with torch.no_grad():
        log_probs = torch.log_softmax(parts.network(inputs, values), dim=-1)
    expected = log_probs[0, torch.arange(target.shape[1]), target[0]].reshape(6, 7, 6)
    np.testing.assert_allclose(written, expected.numpy(), rtol=1e-5, atol=1e-5)

    image = nib.load(run_dir / "likelihood" / "val" / f"{subject}.nii.gz")
    assert image.shape == (48, 56, 48)
    np.testing.assert_allclose(image.get_fdata()[::8, ::8, ::8], written, rtol=1e-5, atol=1e-5)
    rows = list(csv.DictReader(open(run_dir / "likelihood" / "val.csv")))
    assert len(rows) == 4 and float(rows[0]["nll_per_token"]) > 0


def test_tokens_on_the_fly_and_a_subject_missing_from_the_table(prior_run, run_cli, tiny_cohort, tmp_path):  # noqa: F811
    _, _, tok_dir = prior_run
    table = tmp_path / "conditioning.tsv"
    lines = (tiny_cohort / "conditioning.tsv").read_text().splitlines()
    missing = next(csv.DictReader(open(tiny_cohort / "train.tsv"), delimiter="\t"))["subject"]
    table.write_text("\n".join(line for line in lines if not line.startswith(missing)) + "\n")
    recipe = tmp_path / "fly.yaml"
    recipe.write_text(
        "task: transformer\n"
        f"experiment: {{name: fly, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: nifti, train: {tiny_cohort}/train.tsv, roi: [48, 56, 48]}}\n"
        f"tokenizer: {{run: {tok_dir}}}\n"
        f"conditioning: {{name: prepend, table: {table}, variables: [{{column: age}}]}}\n"
        "network: {name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}\n"
        "train: {epochs: 1, batch_size: 4, log_every: 1}\n"
    )
    result = run_cli("run", str(recipe))
    assert result.code == 2
    assert f"subject '{missing}' has no row" in result.err and str(table) in result.err
    assert not (tmp_path / "runs" / "fly").exists()
    result = run_cli("run", str(recipe), "--set", "train.missing=drop")
    assert result.code == 0, result
    assert "1 subject(s) left out for missing conditioning" in result.out
    assert "volumes tokenized on the fly" in result.out


def test_a_refused_sample_start_leaves_the_records_as_they_were(prior_run, run_cli):
    path, run_dir, _ = prior_run
    args = ("run", str(path), "--mode", "sample", "--set", "sample.values=[{age: 60, sex: 0, ventricular_volume: 20}]",
            "--set", "sample.output=records", "--set", "sample.png=false")
    result = run_cli(*args, "--set", "sample.temperature=1.0")
    assert result.code == 0, result

    def records():
        return {p.name: p.read_bytes() for p in sorted(run_dir.glob("recipe*.yaml"))}

    before = records()
    assert any(b"temperature: 1.0" in text for name, text in before.items() if name.startswith("recipe.sample"))
    result = run_cli(*args, "--set", "sample.temperature=0.25")
    assert result.code == 2 and "holds samples drawn with other settings" in result.err
    assert records() == before  # the refused start rewrote nothing and added nothing


@pytest.fixture
def checkpoint_reads(monkeypatch):
    """Every ``torch.load`` of a file, counted by resolved path (read_checkpoint goes through it)."""
    reads: collections.Counter = collections.Counter()
    load = torch.load

    def counting(source, *args, **kwargs):
        if isinstance(source, (str, os.PathLike)):
            reads[str(Path(source).resolve())] += 1
        return load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return reads


def test_sample_likelihood_evaluate_and_load_read_each_checkpoint_once(prior_run, run_cli, checkpoint_reads):
    path, run_dir, tok_dir = prior_run
    prior_checkpoint = str((run_dir / "checkpoints" / "best.pt").resolve())
    tokenizer_checkpoint = str((tok_dir / "checkpoints" / "best.pt").resolve())
    both = {prior_checkpoint: 1, tokenizer_checkpoint: 1}
    runs = {
        "sample": (both, "--set", "sample.split=val", "--set", "sample.output=counted", "--set", "sample.png=false"),
        # scoring token grids needs no decoder: the tokenizer is not read at all
        "likelihood": ({prior_checkpoint: 1}, "--set", "likelihood.splits=[val]",
                       "--set", "likelihood.output=counted_likelihood"),
        "evaluate": (both, "--set", "sample.output=counted", "--set", "evaluation.samples=counted",
                     "--set", "evaluation.metrics=[{name: mmd}]"),
    }
    for mode, (expected, *overrides) in runs.items():
        checkpoint_reads.clear()
        result = run_cli("run", str(path), "--mode", mode, *overrides)
        assert result.code == 0, (mode, result)
        assert dict(checkpoint_reads) == expected, mode

    import brainsynth

    checkpoint_reads.clear()
    prior = brainsynth.load(run_dir)
    prior.sample(1, {"age": 60, "sex": 0, "ventricular_volume": 20})
    assert dict(checkpoint_reads) == both
