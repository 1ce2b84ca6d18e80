"""Fault injection: SIGKILL at random moments, a full disk, a corrupt checkpoint; then recover and compare.

    python benchmarks/faults.py [--seed 0] [--budget 900] [--kills N] [--workdir DIR]

A tiny chain (tokenizer train -> extract -> prior train -> sample -> likelihood, on an 8-subject
demo cohort at 4 mm) is run once without faults: the references. Then every case starts from a
copy of the reference run as it stood before its mode (or from nothing, for train), suffers one
fault, and recovers the way a user would (``--resume`` for train, the same command again for the
other modes):

* ``kill``: SIGKILL of the whole job (every rank) at a random moment (a random logged step or
  written file, then a random delay), under 1 and 2 processes, of train for both stages,
  extract, sample and likelihood;
* ``full disk``: the run lives on a size-limited tmpfs (real ENOSPC) that fills during the mode;
  the start must fail with one ``error:`` line; the disk is then enlarged and the mode recovered.
  Where no tmpfs can be mounted (not root, no mount rights), ENOSPC is injected at the file layer;
* ``corrupt``: ``last.pt`` damaged in place with ``previous.pt`` intact (must resume from it,
  saying so); both damaged (must refuse in one line); ``best.pt`` damaged before ``sample``
  (must refuse in one line).

Each case ends ``identical`` (every checkpoint's tensors and every token grid, sample, map and
table equal to the reference's, by sha256) or ``refused`` (one ``error:`` line, no traceback),
and counts ``lost`` files: a checkpoint, token grid, sample or map that existed after the fault
and is gone, changed, damaged or at an earlier step after the recovery. Every fixed case runs
once; then random kill cases are drawn (``--seed``) until ``--budget`` seconds are spent or
``--kills`` more kills are done. Prints a table and totals; exits 1 on any loss, mismatch or
unexpected outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import _faults  # noqa: E402  (shared with tests/test_faults.py)

STEPS = 12
"""Training steps of each stage: 6 training subjects, batch 1 (1 process) or 2 x 1, 2 epochs."""

MODES = {  # mode -> (stage, the folder and files that mark progress)
    "train-tokenizer": ("tok", None),
    "train-prior": ("prior", None),
    "extract": ("tok", ("tokens", "*.npy")),
    "sample": ("prior", ("samples", "*.nii.gz")),
    "likelihood": ("prior", ("likelihood", "*.nii.gz")),
}


@dataclasses.dataclass
class Outcome:
    case: str
    kind: str
    processes: int
    moment: str
    ending: str
    lost: int
    ok: bool
    seconds: float
    note: str = ""


class Bench:
    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.cohort = work / "cohort"
        self.recipes = {"tok": work / "tok.yaml", "prior": work / "prior.yaml"}
        self.expected: dict[tuple[str, int], dict[str, str]] = {}
        """(mode, processes) -> the reference run's finished files after that mode."""
        self.before: dict[str, Path] = {}
        """mode -> a copy of the reference run as it stood before that mode."""
        self.count = 0

    # -- running brainsynth ------------------------------------------------------------------------
    def args(self, stage: str, mode: str, root: Path, processes: int, resume: bool = False) -> list[str]:
        args = ["run", str(self.recipes[stage]), "--set", f"experiment.root={root}"]
        if mode != "train":
            args += ["--mode", mode]
        if processes > 1:
            args += ["--nproc-per-node", str(processes)]
        return args + (["--resume"] if resume else [])

    def call(self, args: list[str], log: Path) -> tuple[int, str]:
        process = _faults.start(args, log)
        code = process.wait(timeout=600)
        return code, log.read_text(errors="replace")

    # -- references ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        from brainsynth.plugins.datasets.demo_cohort import build_demo_cohort

        build_demo_cohort(self.cohort, **_faults.COHORT)
        ref = self.work / "ref"
        self.recipes["tok"].write_text(_faults.TOKENIZER.format(root=ref, cohort=self.cohort))
        self.recipes["prior"].write_text(_faults.PRIOR.format(root=ref, tokens=ref / "tok" / "tokens"))
        for stage, mode, key in (("tok", "train", "train-tokenizer"), ("tok", "extract", "extract"),
                                 ("prior", "train", "train-prior"), ("prior", "sample", "sample"),
                                 ("prior", "likelihood", "likelihood")):
            if mode != "train":
                self.before[key] = self.work / "before" / key / stage
                shutil.copytree(ref / stage, self.before[key])
            code, out = self.call(self.args(stage, mode, ref, 1), self.work / f"ref-{key}.log")
            if code != 0:
                raise SystemExit(f"reference {key} failed:\n{out[-2000:]}")
            self.expected[(key, 1)] = _faults.finished(ref / stage)
        for stage, key in (("tok", "train-tokenizer"), ("prior", "train-prior")):
            root = self.work / "ref2"
            code, out = self.call(self.args(stage, "train", root, 2), self.work / f"ref2-{key}.log")
            if code != 0:
                raise SystemExit(f"reference {key} (2 processes) failed:\n{out[-2000:]}")
            self.expected[(key, 2)] = _faults.finished(root / stage)
        for key in ("extract", "sample", "likelihood"):  # the other modes write what one process writes
            self.expected[(key, 2)] = self.expected[(key, 1)]

    def case_root(self, name: str) -> Path:
        self.count += 1
        root = self.work / "cases" / f"{self.count:03d}-{name}"
        root.mkdir(parents=True)
        return root

    def seed_run(self, key: str, root: Path) -> Path:
        """The case's run directory: a copy of the reference before this mode (nothing for train)."""
        stage = MODES[key][0]
        if key in self.before:
            shutil.copytree(self.before[key], root / stage)
        return root / stage

    # -- judging -------------------------------------------------------------------------------------
    @staticmethod
    def one_line_refusal(code: int, out: str) -> bool:
        lines = [line for line in out.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        return code != 0 and len(errors) == 1 and lines[-1].startswith("error: ") and "Traceback" not in out

    def ending(self, key: str, processes: int, run_dir: Path) -> list[str]:
        return _faults.differences(self.expected[(key, processes)], _faults.finished(run_dir))

    # -- cases ---------------------------------------------------------------------------------------
    def kill(self, key: str, processes: int) -> Outcome:
        began = time.monotonic()
        stage, progress = MODES[key]
        mode = "train" if key.startswith("train") else key
        root = self.case_root(f"kill-{key}-{processes}p")
        run_dir = self.seed_run(key, root)
        delay = self.rng.uniform(0, 0.3)
        if progress is None:
            step = self.rng.randint(1, STEPS - 1) if processes == 1 else self.rng.randint(1, STEPS // 2 - 1)
            moment, ready = f"step {step} +{delay * 1000:.0f} ms", _faults.train_step(run_dir, step)
        else:
            total = len([p for p in self.expected[(key, 1)] if p.startswith(progress[0]) and p.endswith(progress[1][1:])])
            files = self.rng.randint(0, total - 1)
            moment = f"{files} file(s) +{delay * 1000:.0f} ms"
            ready = _faults.files_written(run_dir / progress[0], progress[1], files) if files else (lambda: True)
        first: list[float] = []

        def due() -> bool:
            if not first and ready():
                first.append(time.monotonic())
            return bool(first) and time.monotonic() - first[0] >= delay

        process = _faults.start(self.args(stage, mode, root, processes), root / "killed.log")
        killed = _faults.kill_when(process, due)
        before = _faults.finished(run_dir)
        code, out = self.call(self.args(stage, mode, root, processes, resume=mode == "train"), root / "recover.log")
        after = _faults.finished(run_dir)
        lost = _faults.losses(before, after)
        if code == 0:
            diff = self.ending(key, processes, run_dir)
            ending, ok, note = ("identical", True, "") if not diff else ("differs", False, "; ".join(diff[:3]))
        elif self.one_line_refusal(code, out):
            ending, ok, note = "refused", True, out.strip().splitlines()[-1][:110]
        else:
            ending, ok, note = f"exit {code}", False, out.strip().splitlines()[-1][:110] if out.strip() else ""
        if not killed:
            moment += " (ended first)"
        return Outcome(f"kill {key}", "kill", processes, moment, ending, len(lost), ok and not lost,
                       time.monotonic() - began, note or "; ".join(lost[:2]))

    def full_disk(self, key: str, slack: int) -> Outcome:
        """The mode runs out of space: one error line, nothing finished lost; enlarged, it recovers."""
        began = time.monotonic()
        stage = MODES[key][0]
        mode = "train" if key.startswith("train") else key
        root = self.case_root(f"full-disk-{key}")
        with _faults.full_disk(root, 64 << 20) as resize:
            run_dir = self.seed_run(key, root)
            if resize is not None:
                resize(_faults.used_bytes(root) + slack)
                code, out = self.call(self.args(stage, mode, root, 1), root.parent / f"{root.name}-full.log")
                how = "tmpfs"
            else:
                code, out = self.injected(stage, mode, root, slack)
                how = "injected"
            refused = self.one_line_refusal(code, out) and "No space left on device" in out
            before = _faults.finished(run_dir)
            if resize is not None:
                resize(64 << 20)
            resume = mode == "train" and run_dir.is_dir()  # a start that failed before its first checkpoint left nothing
            code2, out2 = self.call(self.args(stage, mode, root, 1, resume=resume), root.parent / f"{root.name}-recover.log")
            after = _faults.finished(run_dir)
            lost = _faults.losses(before, after)
            diff = self.ending(key, 1, run_dir) if code2 == 0 else [f"recovery exit {code2}"]
        ok = refused and not diff and not lost
        line = out.strip().splitlines()[-1] if out.strip() else ""
        note = line[:110] if ok else "; ".join([*diff[:2], *lost[:2]]) or line[:110]
        return Outcome(f"full disk {key}", "full disk", 1, f"{how}, {slack >> 10} KiB free",
                       "identical" if not diff else "differs", len(lost), ok, time.monotonic() - began, note)

    def injected(self, stage: str, mode: str, root: Path, budget: int) -> tuple[int, str]:
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import _faults; from brainsynth import cli\n"
            "with _faults.enospc_after(sys.argv[2], int(sys.argv[3])):\n    cli.main(sys.argv[4:])\n"
        )
        log = root.parent / f"{root.name}-full.log"
        with open(log, "wb") as out:
            result = subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), str(root), str(budget),
                                     *self.args(stage, mode, root, 1)], stdout=out, stderr=subprocess.STDOUT)
        return result.returncode, log.read_text(errors="replace")

    def corrupt(self, which: str) -> Outcome:
        """``last``: last.pt damaged, previous.pt intact -> resumes from previous.pt, identical.
        ``both``: last.pt and previous.pt damaged -> one-line refusal. ``best``: best.pt damaged
        -> sample refuses in one line."""
        began = time.monotonic()
        key = "sample" if which == "best" else "train-tokenizer"
        stage = MODES[key][0]
        root = self.case_root(f"corrupt-{which}")
        run_dir = self.seed_run(key, root)
        if which == "best":
            _faults.corrupt(run_dir / "checkpoints" / "best.pt")
            args = self.args(stage, "sample", root, 1)
            moment = "best.pt damaged"
        else:
            step = self.rng.randint(5, STEPS - 1)
            process = _faults.start(self.args(stage, "train", root, 1), root / "killed.log")
            _faults.kill_when(process, _faults.train_step(run_dir, step))
            names = ["last.pt"] + (["previous.pt"] if which == "both" else [])
            for name in names:
                _faults.corrupt(run_dir / "checkpoints" / name)
            args = self.args(stage, "train", root, 1, resume=True)
            moment = f"killed at step {step}, {' and '.join(names)} damaged"
        before = _faults.finished(run_dir)
        code, out = self.call(args, root / "recover.log")
        lost = _faults.losses(before, _faults.finished(run_dir))
        if which == "last":
            diff = self.ending(key, 1, run_dir) if code == 0 else [f"exit {code}: {out.strip().splitlines()[-1][:100]}"]
            said = "resuming from" in out and "previous.pt" in out
            ok, ending = not diff and said and not lost, "identical" if not diff else "differs"
            note = next((line for line in out.splitlines() if "previous.pt" in line), "")[:110] if ok else "; ".join(diff[:2])
        else:
            refused = self.one_line_refusal(code, out)
            ok, ending = refused and not lost, "refused" if refused else f"exit {code}"
            note = out.strip().splitlines()[-1][:110] if out.strip() else ""
        return Outcome(f"corrupt {which}", "corrupt", 1, moment, ending, len(lost), ok, time.monotonic() - began, note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments and the extra cases (default 0)")
    parser.add_argument("--budget", type=float, default=900, help="seconds after which no further random kill starts (default 900)")
    parser.add_argument("--kills", type=int, default=None, help="at most this many random kills after the fixed cases")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("-k", dest="only", default=None, help="run only the fixed cases whose name holds this text")
    args = parser.parse_args()

    began = time.monotonic()
    scratch = None if args.workdir else tempfile.TemporaryDirectory(prefix="faults-")
    work = args.workdir or Path(scratch.name)
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, args.seed)
    outcomes: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        flag = "ok " if outcome.ok else "BAD"
        print(f"{flag} {outcome.case:<26} {outcome.processes}p  {outcome.moment:<42} {outcome.ending:<9} "
              f"lost {outcome.lost}  {outcome.seconds:5.1f}s  {outcome.note}", flush=True)

    try:
        bench.prepare()
        print(f"references ready in {time.monotonic() - began:.0f} s", flush=True)
        print(f"    {'case':<26} {'np':<3} {'moment':<42} {'ending':<9} {'lost':<6} {'time':>6}  note", flush=True)
        fixed = [(f"kill {key} {processes}p", bench.kill, (key, processes)) for key in MODES for processes in (1, 2)]
        checkpoint = (work / "ref" / "tok" / "checkpoints" / "last.pt").stat().st_size
        fixed += [(f"full disk {key}", bench.full_disk, (key, slack)) for key, slack in (
            # room for last.pt, the next one's temporary and the logs: the third save (with previous.pt) fails
            ("train-tokenizer", checkpoint * 5 // 2 + (32 << 10)),
            ("extract", 12 << 10), ("sample", 96 << 10), ("likelihood", 48 << 10))]
        fixed += [(f"corrupt {which}", bench.corrupt, (which,)) for which in ("last", "both", "best")]
        for name, case, case_args in fixed:
            if args.only is None or args.only in name:
                report(case(*case_args))
        extra = 0
        while (args.kills is None or extra < args.kills) and time.monotonic() - began < args.budget:
            report(bench.kill(bench.rng.choice(list(MODES)), bench.rng.choice((1, 2))))
            extra += 1
    finally:
        if scratch is not None:
            scratch.cleanup()

    kills = [o for o in outcomes if o.kind == "kill"]
    print()
    print(f"cases {len(outcomes)}: kills {len(kills)} (survived {sum(o.ok for o in kills)}), "
          f"full disk {sum(o.kind == 'full disk' for o in outcomes)}, corrupt {sum(o.kind == 'corrupt' for o in outcomes)}")
    print(f"bit-identical endings {sum(o.ending == 'identical' for o in outcomes)}, "
          f"one-line refusals {sum(o.ending == 'refused' for o in outcomes)}, "
          f"files lost {sum(o.lost for o in outcomes)}, failed cases {sum(not o.ok for o in outcomes)}")
    print(f"wall time {time.monotonic() - began:.0f} s (seed {args.seed})")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
