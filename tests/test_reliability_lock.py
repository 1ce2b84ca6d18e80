"""One job per run directory (issue 12, item 2) and distributed jobs that end cleanly (item 3).

A run holds ``<run>/.lock`` while it lives: a second start is refused in one line naming the
holder, a lock left by a dead job is taken over, and the lock goes whatever way the run ends.
Under ``--nproc-per-node`` a signal to the launcher stops every worker with one line, a worker
killed from outside is reported with its rank and signal, and workers do not outlive their
launcher. The lock tests run the CLI in this process against a holder in a real subprocess;
the multi-process ones launch real 2-process gloo jobs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from _toy_plugin import recipe_text
from conftest import one_line_error, write_token_grids

from brainsynth.core import locks
from brainsynth.core.files import is_data_file, remove_leftovers
from brainsynth.core.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]


def contents(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time: a start that writes nothing leaves this as it was."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def python(code: str, **kwargs) -> subprocess.Popen:
    """A fresh interpreter running `code` with this checkout's brainsynth."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True, **kwargs)


def hold_lock(run: Path) -> subprocess.Popen:
    """Another job: a real process that takes the run's lock and keeps it until it is killed."""
    holder = python(f"""
        import time
        from pathlib import Path
        from brainsynth.core import locks
        locks.acquire(Path({str(run)!r}), "train")
        print("held", flush=True)
        time.sleep(120)
    """, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_start_is_refused_while_another_process_holds_the_run(trained, run_cli):
    recipe, run = trained
    holder = hold_lock(run)
    try:
        before = contents(run)
        err = one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2"))
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and "since" in err, err
        assert str(run) in err
        assert contents(run) == before  # byte for byte: no record, no leftovers removed, lock untouched
        lock = json.loads((run / locks.LOCK_FILE).read_text())
        assert lock["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_job_is_taken_over_with_one_line(trained, run_cli):
    recipe, run = trained
    dead = python(f"""
        import os
        from pathlib import Path
        from brainsynth.core import locks
        locks.acquire(Path({str(run)!r}), "train")
        os._exit(0)  # gone without releasing it, as after a SIGKILL
    """)
    assert dead.wait(timeout=60) == 0
    assert json.loads((run / locks.LOCK_FILE).read_text())["pid"] == dead.pid
    result = run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2")
    assert result.code == 0, result
    taken = [line for line in result.out.splitlines() if "took over" in line]
    assert len(taken) == 1 and f"pid {dead.pid}" in taken[0] and "no longer running" in taken[0], result.out
    assert not (run / locks.LOCK_FILE).exists()


def test_a_lock_whose_pid_now_belongs_to_another_program_is_stale(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        start = locks.process_start(other.pid)
        if start is None:
            pytest.skip("no /proc/<pid>/stat: process start times are not available here")
        lock = locks.Holder(host=socket.gethostname(), pid=other.pid, start=start, boot=locks.boot_id(),
                            since="2026-01-01T00:00:00", mode="train")
        assert lock.alive() is True
        reused = locks.Holder(**{**lock.__dict__, "start": start - 1})  # the job that wrote it started earlier
        assert reused.alive() is False and "another program" in reused.why_stale()
        (tmp_path / locks.LOCK_FILE).write_text(json.dumps(reused.__dict__))
        taken = locks.acquire(tmp_path, "sample", say=lambda line: None)
        assert json.loads((tmp_path / locks.LOCK_FILE).read_text())["pid"] == os.getpid()
        taken.release()
        assert not (tmp_path / locks.LOCK_FILE).exists()
    finally:
        other.kill()
        other.wait()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path, toy, run_cli, token_grids):
    run = tmp_path / "runs" / "toy"
    run.mkdir(parents=True)
    (run / locks.LOCK_FILE).write_text(json.dumps({"host": "gpu-node-7", "pid": 4242, "since": "2026-05-01T10:00:00", "mode": "train"}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
    before = contents(run)
    err = one_line_error(run_cli("run", str(recipe), "--resume"))
    assert "pid 4242 on gpu-node-7" in err and "2026-05-01T10:00:00" in err and "remove" in err
    assert contents(run) == before


def test_the_lock_is_gone_after_a_run_and_after_a_failed_start(trained, run_cli):
    recipe, run = trained
    assert not (run / locks.LOCK_FILE).exists()  # after a normal run
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # the resume fails when it loads this
    before = contents(run)
    one_line_error(run_cli("run", str(recipe), "--resume", "--set", "train.epochs=2"))
    assert not (run / locks.LOCK_FILE).exists()
    assert contents(run) == before


def test_a_new_run_refused_for_a_held_name_leaves_the_holder_alone(toy, run_cli, tmp_path, token_grids):
    """Two starts of the same new run: the second finds the first's directory and leaves it as it is."""
    run = tmp_path / "runs" / "toy"
    run.mkdir(parents=True)
    holder = hold_lock(run)
    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1))
        before = contents(run)
        one_line_error(run_cli("run", str(recipe)))
        assert contents(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_file_is_neither_data_nor_a_leftover(tmp_path):
    assert not is_data_file(tmp_path / locks.LOCK_FILE)
    held = locks.acquire(tmp_path, "train")
    assert remove_leftovers(tmp_path) == [] and (tmp_path / locks.LOCK_FILE).is_file()
    held.release()
    held.release()  # releasing twice is harmless


def test_a_pipeline_and_its_stages_each_hold_their_own_directory(toy, run_cli, tmp_path, token_grids):
    stage = yaml.safe_load(recipe_text(token_grids, "unused", epochs=1))
    del stage["experiment"]
    pipeline = {"task": "pipeline", "experiment": {"name": "pipe", "root": str(tmp_path / "runs")},
                "stages": [{"name": "prior", "recipe": stage}], "report": {"enabled": False}}
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(yaml.safe_dump(pipeline))
    assert run_cli("run", str(recipe)).code == 0  # the stage does not wait on its pipeline's lock
    assert not list((tmp_path / "runs").rglob(locks.LOCK_FILE))
    holder = hold_lock(tmp_path / "runs" / "pipe")
    try:
        err = one_line_error(run_cli("run", str(recipe), "--resume"))
        assert f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


# -- several processes -----------------------------------------------------------------------------


def ddp_recipe(tmp_path: Path, epochs: int = 400) -> Path:
    """A tiny prior that trains long enough to be signalled mid-run (4 steps per epoch per rank)."""
    tokens = write_token_grids(tmp_path / "tokens", count=8, seed=1)
    path = tmp_path / "prior.yaml"
    path.write_text(
        "task: transformer\n"
        f"experiment: {{name: ddp, root: {tmp_path / 'runs'}}}\n"
        "device: cpu\n"
        f"data: {{name: tokens, train: {tokens}}}\n"
        "network: {name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}\n"
        f"train: {{epochs: {epochs}, batch_size: 1, log_every: 1, checkpoint_every: 0}}\n"
    )
    return path


def children(pid: int) -> dict[int, int]:
    """The processes whose parent is `pid`, as {rank: pid} from their RANK variable."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
                continue
            environ = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in environ:
            found[int(environ["RANK"])] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status waits to be collected


def start_job(tmp_path: Path) -> tuple[subprocess.Popen, dict[int, int]]:
    """``brainsynth run --nproc-per-node 2``, returned once both workers are training."""
    recipe = ddp_recipe(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    launcher = subprocess.Popen([sys.executable, "-m", "brainsynth", "run", str(recipe), "--nproc-per-node", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = tmp_path / "runs" / "ddp" / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and launcher.poll() is None:
        if log.is_file() and any(r["split"] == "train" for r in read_metrics(log)):
            break
        time.sleep(0.05)
    workers = children(launcher.pid)
    assert launcher.poll() is None and sorted(workers) == [0, 1], (launcher.poll(), workers)
    return launcher, workers


def finish(launcher: subprocess.Popen, workers: dict[int, int]) -> tuple[int, str]:
    try:
        _, stderr = launcher.communicate(timeout=60)
    finally:
        for pid in workers.values():  # never leave a worker behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    return launcher.returncode, stderr


def brainsynth_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_worker_with_one_line(tmp_path):
    launcher, workers = start_job(tmp_path)
    os.kill(launcher.pid, signal.SIGTERM)
    code, stderr = finish(launcher, workers)
    assert code != 0
    lines = brainsynth_lines(stderr)
    assert len(lines) == 1 and "SIGTERM" in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not any(alive(pid) for pid in workers.values())
    assert not (tmp_path / "runs" / "ddp" / locks.LOCK_FILE).exists()


@pytest.mark.slow
def test_a_worker_killed_from_outside_is_reported_with_its_rank_and_signal(tmp_path):
    launcher, workers = start_job(tmp_path)
    os.kill(workers[1], signal.SIGKILL)
    code, stderr = finish(launcher, workers)
    assert code != 0
    lines = brainsynth_lines(stderr)
    assert len(lines) == 1 and "rank 1" in lines[0] and "SIGKILL" in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not any(alive(pid) for pid in workers.values())
    assert not (tmp_path / "runs" / "ddp" / locks.LOCK_FILE).exists()  # rank 0 was stopped and let go


@pytest.mark.slow
def test_workers_do_not_outlive_their_launcher(tmp_path):
    launcher, workers = start_job(tmp_path)
    os.kill(launcher.pid, signal.SIGKILL)  # no chance to stop anyone: the workers notice by themselves
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in workers.values()):
        time.sleep(0.1)
    left = [pid for pid in workers.values() if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers kept running after their launcher was killed"
    assert not (tmp_path / "runs" / "ddp" / locks.LOCK_FILE).exists()  # rank 0 stopped in order


@pytest.mark.slow
def test_a_zero_job_really_leaves_its_process_group(tmp_path):
    """After teardown no gloo thread is left: the process group was freed, not left to process exit.

    torch.distributed.optim, imported after the group exists, kept the group alive past
    destroy_process_group, so its gloo threads met the interpreter's shutdown (an abort at exit,
    now and then).
    """
    script = tmp_path / "zero.py"
    script.write_text(textwrap.dedent("""
        import os
        import torch
        from brainsynth.core import distributed
        from brainsynth.core import plugins
        from brainsynth.core.optimization import build_optimizer

        ctx = distributed.setup("cpu")
        module = torch.nn.Linear(3, 3)
        block = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
        optimizer = build_optimizer(module.parameters(), block, plugins.registry(), zero=True)
        module(torch.ones(3)).sum().backward()
        optimizer.step()
        optimizer.consolidate_state_dict(to=0)
        del optimizer, module
        distributed.teardown(finished=True)
        threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
        with open(os.path.join(os.path.dirname(__file__), f"threads.{ctx.rank}"), "w") as out:
            out.write(" ".join(sorted(threads)))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    threads = [(tmp_path / f"threads.{rank}").read_text() for rank in range(2)]
    assert not any("gloo" in names for names in threads), threads
