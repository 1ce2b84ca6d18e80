"""Run records are append-only, --resume checks the recipe, and a failed start leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
import yaml
from _toy_plugin import BigramPrior, recipe_text
from conftest import one_line_error

from brainsynth.core.checkpoint import read_checkpoint
from brainsynth.core.hookspecs import hookimpl


class BrokenPrior(BigramPrior):
    """A plugin's model with a bug: fails when built, or at its first forward pass."""

    def __init__(self, num_tokens: int, max_seq_len: int, dim: int = 16, fail_in: str = "init", conditioning=None) -> None:
        super().__init__(num_tokens, max_seq_len, dim, conditioning)
        self.fail_in = fail_in
        if fail_in == "init":
            raise ValueError("broken prior: bad weights layout")

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        raise ZeroDivisionError("broken prior: division in forward")


class BrokenPlugin:
    @staticmethod
    @hookimpl
    def register_components(registry):
        registry.register("prior", "broken", BrokenPrior)


@pytest.fixture
def broken(extra_plugin, toy):
    extra_plugin(BrokenPlugin, "broken-dist:broken")


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- item 1: append-only records, --resume compares recipes ---------------------------------------


def test_failed_resume_writes_no_record(trained, run_cli):
    recipe, run = trained
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # the resume fails when it loads this
    before = contents(run)
    one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=5"))
    assert contents(run) == before  # recipe.yaml still says epochs 1; no amendment left


def test_refused_resume_writes_no_record(trained, run_cli):
    recipe, run = trained
    before = contents(run)
    one_line_error(run_cli("run", str(recipe), "--resume", "--set", "optimizer.lr=0.5", "--set", "train.epochs=5"))
    assert contents(run) == before
    assert yaml.safe_load((run / "recipe.yaml").read_text())["optimizer"]["lr"] == 0.05


def test_resume_with_a_result_changing_recipe_is_refused_with_the_changed_keys(trained, run_cli):
    recipe, run = trained
    step = read_checkpoint(run / "checkpoints" / "last.pt")["step"]
    err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "optimizer.lr=0.5",
                                 "--set", "seed=4", "--set", "train.epochs=3"))
    assert "optimizer.lr (0.05 -> 0.5)" in err and "seed (3 -> 4)" in err
    assert "train.epochs" not in err  # extending the epochs is harmless
    assert "--allow-changes" in err and "amendment" in err
    assert read_checkpoint(run / "checkpoints" / "last.pt")["step"] == step  # nothing trained


def test_fewer_epochs_on_resume_is_refused(trained, run_cli):
    recipe, run = trained
    run_cli("run", str(recipe), "--resume", "--set", "train.epochs=3")
    err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2"))
    assert "train.epochs (3 -> 2)" in err


def test_allow_changes_records_an_amendment_and_keeps_the_original(trained, run_cli):
    recipe, run = trained
    original = (run / "recipe.yaml").read_bytes()
    result = run_cli("run", str(recipe), "--resume", "--allow-changes", "--set", "optimizer.lr=0.5",
                     "--set", "train.epochs=2")
    assert result.code == 0, result
    assert "resumed from" in result.out and "recipe.amendment-1.yaml" in result.out
    assert (run / "recipe.yaml").read_bytes() == original
    amendment = (run / "recipe.amendment-1.yaml").read_text()
    assert "optimizer.lr (0.05 -> 0.5)" in amendment.splitlines()[0]
    assert yaml.safe_load(amendment)["optimizer"]["lr"] == 0.5
    assert read_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    # the amendment is now the record the next --resume is compared with
    again = run_cli("run", str(recipe), "--resume", "--set", "optimizer.lr=0.5", "--set", "train.epochs=2")
    assert again.code == 0, again
    assert sorted(p.name for p in run.glob("recipe*.yaml")) == ["recipe.amendment-1.yaml", "recipe.yaml"]


def test_harmless_changes_continue_and_are_recorded(trained, run_cli):
    recipe, run = trained
    original = (run / "recipe.yaml").read_bytes()
    result = run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2", "--set", "train.log_every=5")
    assert result.code == 0, result
    assert "resumed from" in result.out
    assert (run / "recipe.yaml").read_bytes() == original
    first = (run / "recipe.amendment-1.yaml").read_text().splitlines()[0]
    assert "train.epochs (1 -> 2)" in first and "train.log_every (1 -> 5)" in first


def test_resume_with_the_same_recipe_writes_no_record(trained, run_cli):
    recipe, run = trained
    original = (run / "recipe.yaml").read_bytes()
    result = run_cli("run", str(recipe), "--resume")
    assert result.code == 0, result
    assert sorted(p.name for p in run.glob("recipe*.yaml")) == ["recipe.yaml"]
    assert (run / "recipe.yaml").read_bytes() == original


def test_a_pipeline_resume_compares_its_stages(toy, run_cli, tmp_path, token_grids):
    stage = yaml.safe_load(recipe_text(token_grids, "unused", epochs=1))
    del stage["experiment"]
    pipeline = {"task": "pipeline", "experiment": {"name": "pipe", "root": str(tmp_path / "runs")},
                "stages": [{"name": "prior", "recipe": stage}], "report": {"enabled": False}}
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(yaml.safe_dump(pipeline))
    assert run_cli("run", str(recipe)).code == 0
    result = run_cli("run", str(recipe), "--resume")
    assert result.code == 0 and "already done, skipped" in result.out, result
    err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "stages.0.recipe.optimizer.lr=0.5"))
    assert "stages.0.recipe.optimizer.lr (0.05 -> 0.5)" in err
    assert sorted(p.name for p in (tmp_path / "runs" / "pipe").glob("recipe*.yaml")) == ["recipe.yaml"]
    # a harmless change is recorded; a stage that already finished says it was not applied to it
    result = run_cli("run", str(recipe), "--resume", "--set", "stages.0.recipe.train.log_every=7")
    assert result.code == 0, result
    assert "already done, skipped (it finished with its recorded recipe; not applied: train.log_every (1 -> 7))" in result.out
    assert (tmp_path / "runs" / "pipe" / "recipe.amendment-1.yaml").is_file()


# -- item 6: a failed start is one line and leaves nothing behind ---------------------------------


@pytest.mark.parametrize("fail_in", ["init", "forward"])
def test_a_plugin_error_at_start_is_one_line_and_leaves_nothing(broken, run_cli, tmp_path, token_grids, fail_in):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs").replace(
        "network: {name: bigram, dim: 8}", f"network: {{name: broken, dim: 8, fail_in: {fail_in}}}"))
    result = run_cli("run", str(recipe))
    assert result.code == 1, result
    assert result.err.count("\n") == 1 and result.err.startswith("error: ") and "Traceback" not in result.err
    expected = "ValueError: broken prior: bad weights layout" if fail_in == "init" else "ZeroDivisionError"
    assert expected in result.err and "test_reliability_records.py" in result.err  # what failed, and where
    assert "--debug" in result.err
    assert not (tmp_path / "runs" / "toy").exists()


def test_debug_shows_the_traceback_of_a_plugin_error(broken, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs").replace("name: bigram", "name: broken"))
    with pytest.raises(ValueError, match="bad weights layout"):
        run_cli("--debug", "run", str(recipe))
    assert not (tmp_path / "runs" / "toy").exists()


def test_resume_refuses_a_half_made_directory(toy, run_cli, tmp_path, token_grids):
    """What an earlier version left after an error that was not its own: a recipe, empty folders, no checkpoint."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    shown = run_cli("validate", str(recipe), "--show")
    run = tmp_path / "runs" / "toy"
    (run / "checkpoints").mkdir(parents=True)
    (run / "logs").mkdir()
    (run / "logs" / "metrics.jsonl").write_text("")
    (run / "recipe.yaml").write_text(shown.out)
    before = tree(run)
    err = one_line_error(run_cli("run", str(recipe), "--resume"))
    assert str(run) in err and "no checkpoint" in err and "rm -r" in err
    assert tree(run) == before  # nothing trained from scratch


def test_differences_name_each_key_and_judge_it():
    from brainsynth.core.records import differences

    recorded = {"mode": "train", "seed": 3, "experiment": {"name": "a", "root": "runs"},
                "optimizer": {"lr": 0.002, "betas": [0.9, 0.999]}, "train": {"epochs": 1, "log_every": 1},
                "stages": [{"name": "t", "recipe": {"loss": {"name": "mse"}, "train": {"epochs": 4}}}]}
    given = {"mode": "sample", "seed": 3, "experiment": {"name": "a", "root": "/abs/runs"},
             "optimizer": {"lr": 0.5, "betas": [0.9, 0.999]}, "train": {"epochs": 5, "log_every": 9},
             "stages": [{"name": "t", "recipe": {"loss": {"name": "l1"}, "train": {"epochs": 2}}}]}
    found = {str(c): c.harmless for c in differences(recorded, given)}
    assert found == {
        "experiment.root (runs -> /abs/runs)": True,
        "optimizer.lr (0.002 -> 0.5)": False,
        "train.epochs (1 -> 5)": True,
        "train.log_every (1 -> 9)": True,
        "stages.0.recipe.loss.name (mse -> l1)": False,
        "stages.0.recipe.train.epochs (4 -> 2)": False,
    }
