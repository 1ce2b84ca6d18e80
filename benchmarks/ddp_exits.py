"""Do 2-process jobs end cleanly every time? The DDP tests, N times in a row, and what failed.

    python benchmarks/ddp_exits.py [--runs 20] [-k EXPRESSION] [TEST_FILE ...]

Runs pytest on the DDP test files (default: tests/test_distributed_tokenizer.py and
tests/test_distributed_transformer.py, which launch real 2-process gloo jobs) `--runs` times,
each time in a fresh pytest base temp, and reports per test how often it failed, with the first
line of each failure. A failure whose output shows a process aborting at exit (``terminate
called``, exit code -6, SIGABRT) is marked ``abort at exit``: what issue #12, item 3 was about
(a rank of a finished ZeRO job aborting after training). Exits 1 when anything failed.

It takes minutes per run on a small machine; ``-k`` narrows the tests (``-k zero_resumes``).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = ["tests/test_distributed_tokenizer.py", "tests/test_distributed_transformer.py"]
ABORT_SIGNS = ("terminate called", "exitcode: -6", "SIGABRT", "Aborted")


def outcomes(report: Path) -> dict[str, str | None]:
    """Test id -> None when it passed, else its failure text, from a JUnit XML report."""
    found: dict[str, str | None] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        if case.find("skipped") is not None:
            continue
        found[name] = None if problem is None else f"{problem.get('message', '')}\n{problem.text or ''}"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="*", default=DEFAULT_TESTS, help="test files or ids (default: the DDP test files)")
    parser.add_argument("--runs", type=int, default=20, help="how many times to run them (default 20)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to narrow the tests")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    failures: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    seen: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="ddp-exits-") as scratch:
        for run in range(1, args.runs + 1):
            report = Path(scratch) / f"run-{run}.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                       f"--basetemp={Path(scratch) / f'tmp-{run}'}", *args.tests]
            if args.keyword:
                command += ["-k", args.keyword]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if not report.is_file():
                print(f"run {run}: pytest did not run (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                return 2
            results = outcomes(report)
            for name, problem in results.items():
                seen[name] += 1
                if problem is not None:
                    failures[name].append((run, problem))
            failed = sum(problem is not None for problem in results.values())
            print(f"run {run}/{args.runs}: {len(results) - failed} passed, {failed} failed ({wall:.0f} s)", flush=True)

    print(f"\n{'test':<90} failed")
    for name in sorted(seen):
        print(f"{name:<90} {len(failures[name])}/{seen[name]}")
    for name, found in sorted(failures.items()):
        for run, problem in found:
            kind = " [abort at exit]" if any(sign in problem for sign in ABORT_SIGNS) else ""
            first = next((line for line in problem.splitlines() if line.strip()), "")
            print(f"  run {run}, {name}{kind}: {first[:200]}")
    total = sum(len(found) for found in failures.values())
    print(f"\n{total} failures in {args.runs} runs of {len(seen)} tests")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
