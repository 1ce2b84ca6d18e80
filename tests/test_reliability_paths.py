"""Paths stay inside their root: run names are one path component, run outputs stay in the run."""

from __future__ import annotations

import pytest
from _toy_plugin import recipe_text
from conftest import one_line_error



@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs/run", ".", "..", "''"])
def test_experiment_name_must_be_one_path_component(toy, run_cli, tmp_path, token_grids, name):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "root" / "runs", name=name))
    err = one_line_error(run_cli("validate", str(recipe)))
    assert f"{recipe}:2: experiment.name" in err and "single" in err
    # and a run is refused before anything is written, inside or outside the root
    one_line_error(run_cli("run", str(recipe)))
    assert not (tmp_path / "root").exists() and not (tmp_path / "x").exists()
    assert not (tmp_path / "abs").exists()


def test_experiment_name_from_set_names_the_override(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    err = one_line_error(run_cli("validate", str(recipe), "--set", "experiment.name=../escape"))
    assert "--set experiment.name" in err


def test_run_outputs_cannot_leave_the_run_directory(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    for key in ("likelihood.output", "sample.output", "evaluation.samples"):
        for output in ("../../escaped", str(tmp_path / "absolute"), "a/../../escaped"):
            for command in ("validate", "run"):
                mode = key.split(".")[0].replace("evaluation", "evaluate")
                result = run_cli(command, str(recipe), "--mode", mode, "--set", f"{key}={output}")
                err = one_line_error(result)
                assert f"--set {key}: {key}: '{output}' leaves the run directory" in err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "absolute").exists()


def test_inside_run_helper_refuses_symlinked_escapes(tmp_path):
    from brainsynth.core.errors import RunError
    from brainsynth.core.files import inside

    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to(tmp_path)
    assert inside(run, "samples", "sample.output") == (run / "samples").resolve()
    with pytest.raises(RunError, match="sample.output"):
        inside(run, "link/elsewhere", "sample.output")
