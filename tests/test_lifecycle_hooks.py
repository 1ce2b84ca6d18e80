"""Run lifecycle hooks: a plugin hears a run start, its metrics, and its end, without writing a task."""

from __future__ import annotations

from conftest import one_line_error, recipe_text

from brainsynth.core import plugins
from brainsynth.core.hookspecs import hookimpl


class Recorder:
    """What an MLflow or W&B plugin would do, kept in a list."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def run_started(self, run):
        self.events.append(("started", run.mode, run.directory.name))

    @hookimpl
    def metrics_logged(self, step, split, metrics):  # a hook may take only some arguments
        self.events.append(("metrics", step, split, sorted(metrics)))

    @hookimpl
    def checkpoint_saved(self, path, epoch, step):
        self.events.append(("checkpoint", path.name, epoch, step))

    @hookimpl
    def run_finished(self, run, metrics, error):
        self.events.append(("finished", run.mode, sorted(metrics or {}), error))


def test_a_plugin_hears_a_run_start_log_and_finish(toy, extra_plugin, run_cli, tmp_path, token_grids):
    recorder = Recorder()
    extra_plugin(recorder, "recorder-dist:recorder")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    assert run_cli("run", str(recipe)).code == 0
    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "metrics" in kinds
    assert recorder.events[0] == ("started", "train", "toy")
    assert ("metrics", 1, "train", ["ce", "lr"]) in recorder.events and ("metrics", 3, "val", ["ce"]) in recorder.events
    finished = recorder.events[-1]
    assert finished[1] == "train" and finished[2] and finished[3] is None
    saved = [e for e in recorder.events if e[0] == "checkpoint"]
    assert {e[1] for e in saved} == {"last.pt", "best.pt"} and all(e[2:] == (1, 3) for e in saved)


def test_a_failing_run_is_reported_finished_with_its_error(toy, extra_plugin, run_cli, tmp_path, token_grids):
    recorder = Recorder()
    extra_plugin(recorder, "recorder-dist:recorder")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    (token_grids / "subject00.npy").write_bytes(b"not a grid")
    line = one_line_error(run_cli("run", str(recipe)))
    assert f"{token_grids / 'subject00.npy'}: cannot read this token grid (ValueError" in line  # a user's file, not a bug
    finished = [e for e in recorder.events if e[0] == "finished"]
    assert len(finished) == 1 and finished[0][3] is not None


def test_a_hook_that_fails_stops_the_run_in_one_line_naming_the_plugin(toy, extra_plugin, run_cli, tmp_path, token_grids):
    class Broken:
        @hookimpl
        def metrics_logged(self, metrics):
            raise ConnectionError("tracking server unreachable")

    extra_plugin(Broken(), "brainsynth-tracker:tracker")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    line = one_line_error(run_cli("run", str(recipe)))
    assert "plugin brainsynth-tracker (tracker) failed in its metrics_logged hook: ConnectionError: tracking server unreachable" in line
    assert not (tmp_path / "runs" / "toy").exists()  # a run that failed before its first checkpoint leaves nothing


def test_trace_plugins_says_who_registered_and_who_handled(toy, extra_plugin, run_cli, tmp_path, token_grids, monkeypatch):
    monkeypatch.setenv(plugins.TRACE_PLUGINS_ENV, "1")
    monkeypatch.setattr(plugins, "_traced", set())
    extra_plugin(Recorder(), "recorder-dist:recorder")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    result = run_cli("run", str(recipe))
    assert result.code == 0
    assert "plugins: toy-dist (toy) registered ordering flat" in result.out
    assert "plugins: run_started handled by recorder-dist (recorder)" in result.out
    assert result.out.count("plugins: metrics_logged handled by recorder-dist (recorder)") == 1
