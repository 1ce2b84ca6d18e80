"""What does starting brainsynth cost, against ``python -c "import torch"`` in the same run?

    python benchmarks/startup.py [--repeat 5]

Each command runs `--repeat` times in a fresh interpreter; the table gives the median CPU time
(user + system of the child, so a busy machine inflates it less than wall time) and the ratio to
importing torch. Targets (issue #13, item 10): ``--version`` and ``--help`` at most 0.5x,
``validate`` and ``plugins`` at most 2x. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BRAINSYNTH = [sys.executable, "-m", "brainsynth"]
COMMANDS = [
    ("import torch", [sys.executable, "-c", "import torch"], None),
    ("brainsynth --version", [*BRAINSYNTH, "--version"], 0.5),
    ("brainsynth --help", [*BRAINSYNTH, "--help"], 0.5),
    ("brainsynth validate recipes/demo.yaml", [*BRAINSYNTH, "validate", "recipes/demo.yaml"], 2.0),
    ("brainsynth plugins", [*BRAINSYNTH, "plugins"], 2.0),
]


def cpu_seconds(command: list[str]) -> float:
    """User + system CPU time of one run of `command` (its children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    medians = {}
    for label, command, _ in COMMANDS:
        medians[label] = statistics.median(cpu_seconds(command) for _ in range(args.repeat))
    torch_time = medians["import torch"]
    missed = 0
    print(f"{'command':<40} {'CPU s':>7} {'x torch':>8} {'target':>8}")
    for label, _, target in COMMANDS:
        ratio = medians[label] / torch_time
        verdict = "" if target is None else ("ok" if ratio <= target else "MISSED")
        missed += verdict == "MISSED"
        shown = "" if target is None else f"<= {target}"
        print(f"{label:<40} {medians[label]:7.2f} {ratio:8.2f} {shown:>8} {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
