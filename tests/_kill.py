"""Kill a brainsynth run with SIGKILL once its metrics log reaches a step (exact-resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from brainsynth.core.run_log import read_metrics


def run_and_kill(recipe: Path, run_dir: Path, kill_at: int, *args: str, timeout: float = 240) -> None:
    """Start ``brainsynth run RECIPE ARGS`` and SIGKILL it once it has logged training step `kill_at`."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    process = subprocess.Popen(
        [sys.executable, "-m", "brainsynth", "run", str(recipe), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    log = run_dir / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        steps = [r["step"] for r in read_metrics(log) if r["split"] == "train"] if log.is_file() else []
        if steps and steps[-1] >= kill_at:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
