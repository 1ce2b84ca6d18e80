"""``brainsynth.load``: trained runs as Python objects, checked against what the CLI's modes wrote,
and the README's snippet run as written (on a tiny run in place of the demo's)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from test_guidance import PRIOR  # a tiny conditioned prior with conditioning dropout
from test_transformer_task import TOKENIZER  # the same tiny tokenizer run

import brainsynth
from brainsynth.core.errors import BrainsynthError

pytestmark = pytest.mark.slow  # trains a tokenizer and a prior


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cohort):  # noqa: F811
    from brainsynth import cli

    root = tmp_path_factory.mktemp("api")
    tokenizer = root / "tok.yaml"
    tokenizer.write_text(TOKENIZER.format(root=root / "runs", cohort=tiny_cohort) + "outputs: {reconstructions: true}\n")
    prior = root / "prior.yaml"
    prior.write_text(PRIOR.format(name="prior", root=root / "runs", tokens=root / "runs" / "tok" / "tokens", dropout=0.3))
    for args in (["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"], ["run", str(prior)],
                 ["run", str(prior), "--mode", "sample", "--set", "sample.values=[{age: 70}, {age: 70}]",
                  "--set", "sample.guidance_scale=1.5", "--set", "sample.batch_size=2"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0, args
    return root / "runs"


def test_the_tokenizer_encodes_and_decodes_as_extract_did(runs):
    tokenizer = brainsynth.load(runs / "tok")
    item = tokenizer.dataset("val")[0]
    tokens = tokenizer.encode(item["image"])
    written = np.load(runs / "tok" / "tokens" / "val" / f"{item['subject']}.npy")
    assert np.array_equal(tokens.numpy(), written)
    image = tokenizer.decode(tokens)
    reconstruction = nib.load(runs / "tok" / "reconstructions" / "val" / f"{item['subject']}.nii.gz")
    assert isinstance(image, nib.Nifti1Image) and image.shape == reconstruction.shape
    np.testing.assert_allclose(image.affine, reconstruction.affine)
    np.testing.assert_allclose(image.get_fdata(), reconstruction.get_fdata(), atol=1e-5)
    batch = tokenizer.encode(torch.stack([item["image"].as_tensor(), item["image"].as_tensor()]))
    assert batch.shape == (2, *tokens.shape) and len(tokenizer.decode(batch)) == 2
    with pytest.raises(BrainsynthError, match="this tokenizer works on 48x56x48 volumes"):
        tokenizer.encode(np.zeros((40, 40, 40), np.float32))


def test_the_prior_samples_what_the_cli_sampled_and_scores_tokens(runs):
    prior = brainsynth.load(runs / "prior")
    assert prior.variables == ["ventricular_volume", "age", "sex"]
    seed = 2 * 1_000_003  # the CLI's generator for batch 0 of a run seeded 2
    grids = prior.sample_tokens(2, {"age": 70}, guidance_scale=1.5, seed=seed)
    folder = runs / "prior" / "samples"
    for i in range(2):
        assert np.array_equal(grids[i].numpy(), np.load(folder / "tokens" / f"sample_{i:05d}.npy"))
    images = prior.sample(2, {"age": 70}, guidance_scale=1.5, seed=seed)
    np.testing.assert_allclose(images[1].get_fdata(), nib.load(folder / "sample_00001.nii.gz").get_fdata(), atol=1e-5)
    assert [r["given_variables"] for r in csv.DictReader(open(folder / "samples.csv"))] == ["age", "age"]

    log_p = prior.likelihood(grids[0], {"age": 70})
    assert log_p.shape == grids[0].shape and (log_p <= 0).all()
    assert not torch.equal(log_p, prior.likelihood(grids[0], {"age": 30}))  # the condition counts
    unconditional = prior.sample_tokens(3, None, seed=1)
    assert unconditional.shape == (3, *grids.shape[1:])
    with pytest.raises(BrainsynthError, match="2 conditions for 3 samples"):
        prior.sample_tokens(3, [{"age": 70}, {"age": 71}])
    with pytest.raises(BrainsynthError, match="agee"):
        prior.sample_tokens(1, {"agee": 70})


def test_the_readme_snippet_runs(runs, tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S).group(1)
    snippet = snippet.replace("runs/demo/tokenizer", str(runs / "tok")).replace("runs/demo/prior", str(runs / "prior"))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md (Python API)", "exec"), {})
    assert nib.load(tmp_path / "sample.nii.gz").shape == (48, 56, 48)


def test_a_folder_that_is_no_run_is_one_line(tmp_path):
    with pytest.raises(BrainsynthError, match="no recipe.yaml here"):
        brainsynth.load(tmp_path)
