"""The tokenizer task end to end on the demo cohort: train, extract, decode, evaluate."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)

from brainsynth.core.run_log import read_metrics


def recipe(cohort, root, name="tok", steps_epochs=2, extra="", loss="mse", eval_every=1):
    return (
        "task: tokenizer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        "seed: 1\n"
        f"data: {{name: nifti, train: {cohort / 'train.tsv'}, val: {cohort / 'val.tsv'}, roi: [48, 56, 48], cache: memory}}\n"
        "network:\n"
        "  name: baseline_vqvae\n"
        "  channels: 8\n"
        "  levels: 2\n"
        "  num_res_layers: 1\n"
        "  embedding_dim: 4\n"
        "  codebook: {name: ema, num_embeddings: 32}\n"
        f"loss: {{name: {loss}}}\n"
        "optimizer: {lr: 0.003}\n"
        f"train: {{epochs: {steps_epochs}, batch_size: 2, log_every: 1, eval_every: {eval_every}}}\n" + extra
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cohort):  # noqa: F811
    from brainsynth import cli

    root = tmp_path_factory.mktemp("tokenizer")
    path = root / "tok.yaml"
    path.write_text(recipe(tiny_cohort, root / "runs", steps_epochs=3, eval_every=3))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", str(path)])
    assert exit_info.value.code == 0
    return path, root / "runs" / "tok"


def test_training_lowers_the_loss(trained):
    _, run_dir = trained
    losses = [r["loss"] for r in read_metrics(run_dir / "logs" / "metrics.jsonl") if r["split"] == "train"]
    assert len(losses) == 24  # 16 training subjects, batch 2, 3 epochs
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    val = [r for r in read_metrics(run_dir / "logs" / "metrics.jsonl") if r["split"] == "val"]
    assert len(val) == 1 and all(0 < r["ms_ssim"] <= 1 for r in val)
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_extract_then_decode_keeps_shape_and_affine(trained, run_cli, tiny_cohort):  # noqa: F811
    path, run_dir = trained
    result = run_cli("run", str(path), "--mode", "extract", "--set", "outputs.reconstructions=true")
    assert result.code == 0, result
    meta = json.loads((run_dir / "tokens" / "val" / "tokens.json").read_text())
    assert meta["num_embeddings"] == 32 and meta["grid"] == [12, 14, 12]
    grids = sorted((run_dir / "tokens" / "val").glob("*.npy"))
    assert len(grids) == 4 and np.load(grids[0]).dtype == np.uint16
    assert run_cli("run", str(path), "--mode", "decode").code == 0
    decoded = nib.load(run_dir / "decoded" / "val" / f"{grids[0].stem}.nii.gz")
    recon = nib.load(run_dir / "reconstructions" / "val" / f"{grids[0].stem}.nii.gz")
    assert decoded.shape == (48, 56, 48)
    np.testing.assert_allclose(decoded.get_fdata(), recon.get_fdata(), atol=1e-6)
    # the affine is the one of the cropped input, not an identity
    source = nib.load(tiny_cohort / "images" / f"{grids[0].stem}.nii.gz")
    offset = [s // 2 - r // 2 if s >= r else -((r - s) // 2) for s, r in zip(source.shape, (48, 56, 48))]
    expected = source.affine @ np.array([*offset, 1.0])
    assert any(offset) and not np.allclose(decoded.affine, np.eye(4))
    np.testing.assert_allclose(decoded.affine[:3, :3], source.affine[:3, :3])
    np.testing.assert_allclose(decoded.affine[:3, 3], expected[:3])


def test_decode_rejects_out_of_range_tokens(trained, run_cli, tmp_path):
    path, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "broken.npy", np.full((12, 14, 12), 40, dtype=np.uint16))
    result = run_cli("run", str(path), "--mode", "decode", "--set", f"outputs.tokens={bad}")
    assert result.code == 2
    assert "broken.npy: token 40 is outside this tokenizer's codebook [0, 32)" in result.err


def test_evaluate_writes_tables(trained, run_cli):
    path, run_dir = trained
    result = run_cli("run", str(path), "--mode", "evaluate", "--set", "outputs.splits=[val]")
    assert result.code == 0, result
    rows = list(csv.DictReader(open(run_dir / "evaluation" / "val.csv")))
    assert len(rows) == 4 and set(rows[0]) >= {"subject", "ms_ssim", "mae", "mse", "psnr", "perplexity", "code_usage"}


def test_adversarial_training_runs(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    path = tmp_path / "adv.yaml"
    path.write_text(recipe(tiny_cohort, tmp_path / "runs", name="adv", steps_epochs=1, eval_every=2, extra=(
        "discriminator: {name: baseline_discriminator, channels: 4, num_layers: 2}\n"
        "adversarial: {weight: 0.1, adaptive: true}\n"
    )))
    result = run_cli("run", str(path))
    assert result.code == 0, result
    records = [r for r in read_metrics(tmp_path / "runs" / "adv" / "logs" / "metrics.jsonl") if r["split"] == "train"]
    assert all("discriminator" in r and "generator_adversarial" in r for r in records)


def test_mode_without_training_is_a_clear_error(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    path = tmp_path / "tok.yaml"
    path.write_text(recipe(tiny_cohort, tmp_path / "runs"))
    result = run_cli("run", str(path), "--mode", "extract")
    assert result.code == 2 and "does not exist: mode 'extract' works inside a trained run" in result.err
