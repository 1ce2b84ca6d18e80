"""Shape and range checks where they belong (issue 12, items 7 and 8): a ROI the network cannot
divide, token grids of another tokenizer, constant volumes, ``extends:`` that is not one path,
sampling conditions the prior never saw, and token grids that ``tokens.json`` does not list."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _data_fixtures import write_nifti
from conftest import one_line_error, write_token_grids

SIZE = 16


def tokenizer_recipe(train, val, root, name="tok", roi=(SIZE, SIZE, SIZE), levels=2, table=True) -> str:
    roi_text = f", roi: [{', '.join(map(str, roi))}]" if roi is not None else ""
    table_text = f", conditioning_table: {train.parent / 'subjects.tsv'}" if table else ""
    return (
        "task: tokenizer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        "seed: 1\n"
        f"data: {{name: nifti, train: {train}, val: {val}, cache: memory{roi_text}{table_text}}}\n"
        "network:\n"
        "  name: baseline_vqvae\n"
        "  channels: 4\n"
        f"  levels: {levels}\n"
        "  num_res_layers: 1\n"
        "  embedding_dim: 4\n"
        "  codebook: {name: ema, num_embeddings: 8}\n"
        "loss: {name: mse}\n"
        "metrics: [{name: mse}]\n"
        "optimizer: {lr: 0.003}\n"
        "train: {epochs: 1, batch_size: 2, log_every: 1, best_metric: mse}\n"
    )


PRIOR = """\
task: transformer
experiment: {{name: prior, root: {root}}}
seed: 2
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
ordering: {{name: raster_scan}}
conditioning:
  name: cross_attend
  variables:
    - {{column: age}}
    - {{column: sex, kind: categorical}}
network: {{name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}}
optimizer: {{lr: 0.003}}
train: {{epochs: 1, batch_size: 2, log_every: 1}}
"""


def write_volumes(folder, names, shape=(SIZE, SIZE, SIZE), seed=0):
    """Smooth random volumes (a blob of random size each) as ``.nii.gz``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    for name in names:
        radius = rng.uniform(0.3, 0.8)
        volume = (np.sqrt((grid**2).sum(0)) < radius).astype(np.float32) + 0.05 * rng.random(shape, dtype=np.float32)
        write_nifti(folder / f"{name}.nii.gz", volume)
    return folder


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks_cohort")
    write_volumes(root / "train", [f"sub-{i:02d}" for i in range(6)])
    write_volumes(root / "val", [f"sub-{i:02d}" for i in range(6, 8)], seed=1)
    rows = ["subject\tage\tsex"] + [f"sub-{i:02d}\t{60 + 3 * i}\t{i % 2}" for i in range(8)]
    (root / "subjects.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory):
    """A tiny tokenizer (16^3 volumes, grid 4x4x4), its extracted grids and a tiny conditioned prior."""
    from brainsynth import cli

    root = tmp_path_factory.mktemp("checks_runs")
    tokenizer = root / "tok.yaml"
    tokenizer.write_text(tokenizer_recipe(cohort / "train", cohort / "val", root / "runs"))
    prior = root / "prior.yaml"
    prior.write_text(PRIOR.format(root=root / "runs", tokens=root / "runs" / "tok" / "tokens"))
    for args in (["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"], ["run", str(prior)]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0, args
    return {"tokenizer": tokenizer, "prior": prior, "root": root, "tok": root / "runs" / "tok"}


# -- the ROI and the network's down-sampling ------------------------------------------------------
def test_validate_refuses_a_roi_the_downsampling_does_not_divide(run_cli, tmp_path, cohort):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tokenizer_recipe(cohort / "train", cohort / "val", tmp_path / "runs", roi=(18, 16, 16), levels=3))
    err = one_line_error(run_cli("validate", str(recipe)))
    assert f"{recipe}:4: data.roi: 18x16x16 is not divisible by the network's total down-sampling 8" in err
    assert "e.g. 16x16x16" in err
    recipe.write_text(tokenizer_recipe(cohort / "train", cohort / "val", tmp_path / "runs", roi=(16, 16, 16), levels=3))
    assert run_cli("validate", str(recipe)).code == 0


def test_volumes_the_downsampling_does_not_divide_stop_the_first_step_in_one_line(run_cli, tmp_path):
    odd = write_volumes(tmp_path / "odd", ["sub-a", "sub-b"], shape=(10, 12, 10))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tokenizer_recipe(odd, odd, tmp_path / "runs", roi=None, table=False))
    err = one_line_error(run_cli("run", str(recipe)))
    assert "10x12x10 does not survive encoding and decoding" in err and "data.roi" in err


# -- constant volumes -----------------------------------------------------------------------------
def test_a_constant_volume_is_named_or_skipped_with_a_warning(run_cli, tmp_path):
    folder = write_volumes(tmp_path / "train", ["sub-a", "sub-b", "sub-c"], shape=(8, 8, 8))
    write_nifti(folder / "sub-empty.nii.gz", np.zeros((8, 8, 8), dtype=np.float32))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tokenizer_recipe(folder, folder, tmp_path / "runs", roi=(8, 8, 8), levels=1, table=False))
    err = one_line_error(run_cli("run", str(recipe)))
    assert str(folder / "sub-empty.nii.gz") in err and "constant" in err and "data.skip_constant" in err
    result = run_cli("run", str(recipe), "--set", "data.skip_constant=true", "--set", "experiment.name=skipped")
    assert result.code == 0, result
    assert "warning: train: 1 constant volume(s) left out" in result.err and "sub-empty.nii.gz" in result.err


# -- extends --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["[base.yaml]", "[base.yaml, other.yaml]", "", "{path: base.yaml}"])
def test_extends_must_be_one_path(run_cli, tmp_path, cohort, value):
    (tmp_path / "base.yaml").write_text(tokenizer_recipe(cohort / "train", cohort / "val", tmp_path / "runs"))
    (tmp_path / "other.yaml").write_text("train: {epochs: 3}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {value}\nseed: 4\n")
    err = one_line_error(run_cli("validate", str(recipe)))
    assert f"{recipe}:1: extends: expected one base recipe path" in err
    recipe.write_text("extends: base.yaml\nseed: 4\n")
    assert run_cli("validate", str(recipe)).code == 0


# -- token grids of another tokenizer -------------------------------------------------------------
def test_decode_refuses_a_grid_of_another_tokenizer(runs, run_cli, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.save(foreign / "sub-x.npy", np.zeros((5, 5, 5), dtype=np.uint16))
    err = one_line_error(run_cli("run", str(runs["tokenizer"]), "--mode", "decode", "--set", f"outputs.tokens={foreign}"))
    assert "sub-x.npy: token grid of shape 5x5x5" in err and "trained on 16x16x16 volumes, whose grid is 4x4x4" in err
    assert not (runs["tok"] / "decoded" / "sub-x.nii.gz").exists()


def test_prior_data_refuses_grids_that_disagree_with_tokens_json(tmp_path):
    from brainsynth.core.errors import DataError
    from brainsynth.plugins.datasets.tokens import TokenDataset

    folder = write_token_grids(tmp_path / "tokens", count=3, grid=(5, 5, 5))
    meta = json.loads((folder / "tokens.json").read_text())
    (folder / "tokens.json").write_text(json.dumps({**meta, "grid": [4, 4, 4]}))
    with pytest.raises(DataError, match=r"shape \[5, 5, 5\], but tokens.json records the tokenizer's grid \[4, 4, 4\]"):
        TokenDataset(train=str(folder))


def test_sampling_through_a_tokenizer_of_another_grid_is_one_line(runs, run_cli, cohort):
    other = runs["root"] / "tok8.yaml"
    other.write_text(tokenizer_recipe(cohort / "train", cohort / "val", runs["root"] / "runs", name="tok8", roi=(8, 8, 8)))
    assert run_cli("run", str(other)).code == 0
    err = one_line_error(run_cli(
        "run", str(runs["prior"]), "--mode", "sample", "--set", f"tokenizer.run={runs['root'] / 'runs' / 'tok8'}",
        "--set", "sample.values=[{age: 65, sex: 1}]", "--set", "sample.output=foreign"))
    assert "the prior reads 4x4x4 token grids" in err and "trained on 8x8x8 volumes, whose grid is 2x2x2" in err


# -- sampling conditions --------------------------------------------------------------------------
def test_sampling_outside_the_training_range_warns_once_with_the_range(runs, run_cli):
    result = run_cli("run", str(runs["prior"]), "--mode", "sample", "--set",
                     "sample.values=[{age: 500, sex: 0}, {age: 500, sex: 1}, {age: 66, sex: 1}]",
                     "--set", "sample.output=far")
    assert result.code == 0, result
    warnings = [line for line in result.out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: sample: 'age' = 500 lies outside the prior's training range [60, 75]; the prior never saw "
        "such values, so these samples extrapolate."
    ]
    result = run_cli("run", str(runs["prior"]), "--mode", "sample", "--set", "sample.values=[{age: 66, sex: 1}]",
                     "--set", "sample.output=near")
    assert result.code == 0 and "warning" not in result.out + result.err


def test_sampling_a_level_the_prior_never_saw_is_one_line(runs, run_cli):
    err = one_line_error(run_cli("run", str(runs["prior"]), "--mode", "sample", "--set",
                                 "sample.values=[{age: 66, sex: 7}]", "--set", "sample.output=level"))
    assert "conditioning column 'sex' has value 7, which was not seen in training. Known values: 0, 1" in err


def test_older_mappings_without_a_range_skip_the_warning():
    from brainsynth.core.data import Variable
    from brainsynth.library.conditioning_table import ConditioningTable, VariableMapping

    fitted = VariableMapping.fit(Variable("age"), [60, 70, 75], "t.tsv")
    assert (fitted.minimum, fitted.maximum) == (60.0, 75.0)
    old = fitted.to_dict()
    del old["minimum"], old["maximum"]
    table = ConditioningTable.from_state_dict({"mappings": [old]})
    assert table.outside_training_range([{"age": 500}]) == []
    assert table.encode_many([{"age": 500}]).shape == (1, 1)


# -- stale token grids ----------------------------------------------------------------------------
def test_listings_follow_tokens_json_and_report_stale_grids(runs, run_cli, capsys):
    from brainsynth.plugins.datasets.tokens import TokenDataset

    train = runs["tok"] / "tokens" / "train"
    meta = json.loads((train / "tokens.json").read_text())
    assert meta["subjects"] == [f"sub-{i:02d}" for i in range(6)]
    stale = train / "sub-stale.npy"
    shutil.copy(train / "sub-00.npy", stale)
    np.save(train / "sub-other-grid.npy", np.zeros((5, 5, 5), dtype=np.uint16))
    try:
        capsys.readouterr()
        data = TokenDataset(train=str(train))
        assert [s.name for s in data.subjects("train")] == meta["subjects"]
        err = capsys.readouterr().err
        assert "2 .npy file(s) not listed in tokens.json" in err and "sub-other-grid.npy" in err
        result = run_cli("run", str(runs["tokenizer"]), "--mode", "decode")
        assert result.code == 0, result
        assert "2 .npy file(s) not listed in tokens.json" in result.out
        decoded = sorted(p.name for p in (runs["tok"] / "decoded" / "train").iterdir())
        assert decoded == [f"{name}.nii.gz" for name in meta["subjects"]]
        result = run_cli("run", str(runs["tokenizer"]), "--mode", "extract", "--set", "outputs.splits=[train]")
        assert result.code == 0, result
        assert "warning: extract train:" in result.out and "2 .npy file(s) not listed" in result.out
    finally:
        stale.unlink()
        (train / "sub-other-grid.npy").unlink()


def test_a_grid_listed_in_tokens_json_but_missing_is_one_line(tmp_path):
    from brainsynth.core.errors import DataError
    from brainsynth.plugins.datasets.tokens import TokenDataset

    folder = write_token_grids(tmp_path / "tokens", count=3)
    meta = json.loads((folder / "tokens.json").read_text())
    (folder / "tokens.json").write_text(json.dumps({**meta, "subjects": ["subject00", "subject01", "subject02", "subject03"]}))
    with pytest.raises(DataError, match="lists 4 token grids but 1 are missing \\(subject03\\)"):
        TokenDataset(train=str(folder))
