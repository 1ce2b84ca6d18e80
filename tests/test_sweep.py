"""``brainsynth sweep``: grid parsing and expansion, one run per combination, the tables, skipping."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import write_token_grids

from brainsynth.core import locks, sweep
from brainsynth.core.errors import RecipeError
from brainsynth.core.plugins import registry

PRIOR = """\
task: transformer
experiment: {{name: tiny, root: {root}}}
seed: 0
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
ordering: {{name: raster_scan}}
network: {{name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}}
optimizer: {{lr: 0.003}}
train: {{epochs: 1, batch_size: 3, log_every: 1}}
"""


@pytest.fixture
def prior(tmp_path) -> Path:
    write_token_grids(tmp_path / "tokens" / "train", count=6, grid=(3, 4, 2))
    write_token_grids(tmp_path / "tokens" / "val", count=2, grid=(3, 4, 2), seed=1)
    recipe = tmp_path / "prior.yaml"
    recipe.write_text(PRIOR.format(root=tmp_path / "runs", tokens=tmp_path / "tokens"))
    return recipe


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- parsing and expansion ----------------------------------------------------------------------
def test_grid_values_split_outside_brackets_and_quotes():
    assert sweep.parse_grid("network.depth=4,8") == sweep.GridAxis("network.depth", ("4", "8"))
    axis = sweep.parse_grid("ordering.rot90_axes=[[0, 1]],[[1, 2]],null")
    assert axis.values == ("[[0, 1]]", "[[1, 2]]", "null")
    assert sweep.split_values("'a,b',{x: 1, y: 2}") == ["'a,b'", "{x: 1, y: 2}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("network.depth", "expected KEY.PATH=VALUE1,VALUE2"),
        ("=4,8", "expected KEY.PATH=VALUE1,VALUE2"),
        ("network.depth=4,,8", "empty value"),
        ("network.depth=", "empty value"),
        ("network.depth=4,8,4", "listed more than once"),
        ("network depth=4", "not a dotted recipe key"),
        ("network.depth=[4,8", "unbalanced"),
        ("experiment.name=a,b", "the sweep sets experiment.name itself"),
        ("mode=train,sample", "use --mode"),
    ],
)
def test_bad_grid_syntax_is_a_clear_error(text, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        sweep.parse_grid(text)


def test_expansion_names_every_combination_readably(prior):
    planned = sweep.plan(str(prior), ["ordering.name=raster_scan,hilbert_curve", "network.depth=1,2"], registry())
    names = [c.name for c in planned.combinations]
    assert names == ["tiny-raster_scan-depth1", "tiny-raster_scan-depth2", "tiny-hilbert_curve-depth1", "tiny-hilbert_curve-depth2"]
    last = planned.combinations[-1]
    assert last.recipe["ordering"]["name"] == "hilbert_curve" and last.recipe["network"]["depth"] == 2
    assert last.overrides() == ["ordering.name=hilbert_curve", "network.depth=2", "experiment.name=tiny-hilbert_curve-depth2"]
    assert planned.directory == prior.parent / "runs" / "tiny-sweep"
    assert sweep.run_suffix([("optimizer.lr", "5.0e-4"), ("ordering.rot90_axes", "[[0, 1]]")]) == "lr0.0005-rot90_axes0_1"


def test_invalid_combinations_stop_the_sweep_before_anything_runs(prior, run_cli):
    runs = prior.parent / "runs"
    bad_type = run_cli("sweep", str(prior), "--grid", "network.depth=1,two")
    assert bad_type.code == 2 and "network.depth=two" in bad_type.err and "expected int" in bad_type.err
    refused = run_cli("sweep", str(prior), "--grid", "network.depth=1,2", "--grid", "network.rotary_emb_dim=4,3")
    assert refused.code == 2 and "rotary_emb_dim must be even" in refused.err
    twice = run_cli("sweep", str(prior), "--grid", "network.depth=1", "--grid", "network.depth=2")
    assert twice.code == 2 and "one --grid per key" in twice.err
    clash = run_cli("sweep", str(prior), "--grid", "network.depth=1,2", "--set", "network.depth=3")
    assert clash.code == 2 and "also swept by --grid" in clash.err
    none = run_cli("sweep", str(prior))
    assert none.code == 2 and "at least one --grid" in none.err
    untrained = run_cli("sweep", str(prior), "--grid", "network.depth=1,2", "--mode", "sample")
    assert untrained.code == 2 and "Run the sweep in its training mode first" in untrained.err
    assert not runs.exists()


# -- running ------------------------------------------------------------------------------------
def test_sweep_runs_each_combination_writes_tables_and_skips_finished_ones(prior, run_cli):
    runs = prior.parent / "runs"
    args = ("sweep", str(prior), "--grid", "ordering.name=raster_scan,hilbert_curve", "--grid", "network.depth=1,2")
    listed = run_cli(*args, "--list")
    assert listed.code == 0 and listed.out.count("(to run)") == 4 and not runs.exists()

    first = run_cli(*args)
    assert first.code == 0, first
    rows = _table(runs / "tiny-sweep" / "sweep.csv")
    assert [r["run"] for r in rows] == ["tiny-raster_scan-depth1", "tiny-raster_scan-depth2",
                                        "tiny-hilbert_curve-depth1", "tiny-hilbert_curve-depth2"]
    assert [(r["ordering.name"], r["network.depth"]) for r in rows] == [
        ("raster_scan", "1"), ("raster_scan", "2"), ("hilbert_curve", "1"), ("hilbert_curve", "2")]
    assert {r["status"] for r in rows} == {"ran"}
    for row in rows:
        run_dir = runs / row["run"]
        assert (run_dir / "metrics.train.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
        assert row["train.epoch"] == "1" and float(row["train.val_ce"]) > 0
    saved = (runs / "tiny-hilbert_curve-depth2" / "recipe.yaml").read_text()
    assert "name: hilbert_curve" in saved and "depth: 2" in saved
    markdown = (runs / "tiny-sweep" / "sweep.md").read_text()
    assert "| run | status | ordering.name | network.depth |" in markdown and "train.val_ce" in markdown
    assert "| tiny-hilbert_curve-depth2 | ran | hilbert_curve | 2 |" in markdown

    stamps = {r["run"]: (runs / r["run"] / "checkpoints" / "last.pt").stat().st_mtime_ns for r in rows}
    again = run_cli(*args)
    assert again.code == 0 and again.out.count("skipped") == 4
    rerun_rows = _table(runs / "tiny-sweep" / "sweep.csv")
    assert {r["status"] for r in rerun_rows} == {"skipped"}
    assert [r["train.val_ce"] for r in rerun_rows] == [r["train.val_ce"] for r in rows]
    assert stamps == {r["run"]: (runs / r["run"] / "checkpoints" / "last.pt").stat().st_mtime_ns for r in rows}


def test_a_failed_combination_is_recorded_and_the_sweep_goes_on(prior, run_cli):
    runs = prior.parent / "runs"
    # Weighted sampling needs a conditioning table this recipe lacks: that run fails when it starts.
    args = ("sweep", str(prior), "--grid", "train.weighted=true,false")
    result = run_cli(*args)
    assert result.code == 2 and "1 of 2 sweep runs failed: tiny-weightedtrue" in result.err
    rows = {r["run"]: r for r in _table(runs / "tiny-sweep" / "sweep.csv")}
    assert rows["tiny-weightedtrue"]["status"] == "failed" and "no table" in rows["tiny-weightedtrue"]["error"]
    assert rows["tiny-weightedfalse"]["status"] == "ran" and rows["tiny-weightedfalse"]["train.val_ce"]
    assert not (runs / "tiny-weightedtrue").exists()  # a run that failed on bad input leaves nothing
    assert "failed" in (runs / "tiny-sweep" / "sweep.md").read_text()
    retried = run_cli(*args)
    assert retried.code == 2 and "tiny-weightedfalse: finished before" in retried.out


def test_an_interrupted_combination_is_resumed(prior, run_cli):
    runs = prior.parent / "runs"
    done = run_cli("run", str(prior), "--set", "network.depth=2", "--set", "experiment.name=tiny-depth2")
    assert done.code == 0, done
    (runs / "tiny-depth2" / "metrics.train.json").unlink()  # as if killed after its last checkpoint
    result = run_cli("sweep", str(prior), "--grid", "network.depth=2")
    assert result.code == 0, result
    assert "(resuming)" in result.out and (runs / "tiny-depth2" / "metrics.train.json").is_file()
    assert _table(runs / "tiny-sweep" / "sweep.csv")[0]["status"] == "ran"


def test_a_second_start_of_a_running_sweep_is_refused_and_rewrites_nothing(prior, run_cli):
    runs = prior.parent / "runs"
    args = ("sweep", str(prior), "--grid", "network.depth=1")
    assert run_cli(*args).code == 0
    tables = runs / "tiny-sweep"
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    held = locks.acquire(tables, "sweep")  # this process is alive: the sweep is running
    try:
        refused = run_cli(*args)
    finally:
        held.release()
    assert refused.code == 2 and "is in use by" in refused.err and "Traceback" not in refused.err
    assert {p.name: p.read_bytes() for p in tables.iterdir() if p.name != locks.LOCK_FILE} == {
        k: v for k, v in before.items() if k != locks.LOCK_FILE}
    assert not (tables / locks.LOCK_FILE).exists() and run_cli(*args).code == 0
