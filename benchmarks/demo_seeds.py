"""The demo's figures over seeds, and whether the same command gives the same figures twice.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--repeat] [--root DIR] [--recipe recipes/demo.yaml]

Runs the published demo command once per seed, each in its own run root and cohort cache
(``brainsynth run RECIPE --set seed=S --set experiment.root=DIR/seed-S``), timing the whole
command, and prints the targets of issue #14 per seed with their median and range. With
``--repeat`` the first seed runs a second time from scratch and every number in every
``metrics.*.json`` of the two runs, and every sampled token grid, is compared: the demo is
reproducible when nothing differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from brainsynth.core.run_log import read_metrics

TARGETS = [
    # (label, how to read it from the prior's and tokenizer's metrics, test)
    ("tokenizer kept ventricles: rho", lambda m: m["ventricular_volume_kept_spearman"], lambda v: v >= 0.95, ">= 0.95"),
    ("tokenizer kept ventricles: slope", lambda m: m["ventricular_volume_kept_slope"], lambda v: v >= 0.85, ">= 0.85"),
    ("samples ventricular volume: rho", lambda m: m["ventricular_volume_spearman"], lambda v: v >= 0.9, ">= 0.9"),
    ("samples ventricular volume: slope", lambda m: m["ventricular_volume_slope"], lambda v: 0.8 <= v <= 1.25, "0.8-1.25"),
    ("samples brain volume: rho", lambda m: m["brain_volume_spearman"], lambda v: v >= 0.8, ">= 0.8"),
    ("diagnosis effect (medial temporal), samples / real",
     lambda m: m["diagnosis_effect_medial_temporal_volume_ratio"], lambda v: abs(v - 1.0) <= 0.3, "0.7-1.3"),
    ("diversity: MS-SSIM samples - real", lambda m: m["ms_ssim_diversity"] - m["ms_ssim_diversity_real"],
     lambda v: abs(v) <= 0.02, "|d| <= 0.02"),
    ("wall time, s", lambda m: m["wall_seconds"], lambda v: v < 900, "< 900"),
]

INFORMATIVE = [
    "ventricular_volume_intercept", "ventricular_volume_mae", "ventricular_volume_coverage", "ventricular_volume_wasserstein",
    "brain_volume_slope", "diagnosis_effect_medial_temporal_volume_samples", "diagnosis_effect_medial_temporal_volume_real",
    "sharpness_ratio", "sharpness_reconstructed_ratio", "ventricular_volume_real_slope", "samples",
    "tokenizer_epoch_seconds", "prior_epoch_seconds",
]

VOLATILE = ("time", "seconds", "wall")
"""Keys holding durations: they differ between runs by nature and are not compared."""


def run_demo(recipe: str, seed: int, root: Path) -> dict:
    """Run the demo command for `seed` under `root`; return its prior and tokenizer metrics and wall time."""
    env = {**os.environ, "BRAINSYNTH_CACHE": str(root / "cache")}
    command = ["brainsynth", "run", recipe, f"--set=seed={seed}", f"--set=experiment.root={root / 'runs'}"]
    print("$", " ".join(command), f"(BRAINSYNTH_CACHE={env['BRAINSYNTH_CACHE']})", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the demo failed for seed {seed} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    demo = next((root / "runs").iterdir())
    metrics = {**read_json(demo / "tokenizer" / "metrics.evaluate.json"), **read_json(demo / "prior" / "metrics.evaluate.json")}
    result = {**metrics, "wall_seconds": wall, "directory": str(demo),
              **{f"{stage}_epoch_seconds": epoch_seconds(demo / stage) for stage in ("tokenizer", "prior")}}
    # Kept beside the run as soon as it ends, so an interrupted benchmark loses no finished seed.
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"seed {seed}: {wall:.0f} s", flush=True)
    return result


def epoch_seconds(stage: Path) -> float:
    """Median seconds per training epoch of a stage, from its log: how fast the machine ran.

    The same recipe's wall time moves with the machine's speed (a shared host can slow down by
    half over an hour); this number tells a slow machine from a slower recipe.
    """
    log = stage / "logs" / "metrics.jsonl"
    if not log.is_file():
        return float("nan")
    ends: dict[int, float] = {}
    for entry in read_metrics(log):
        if entry.get("split") == "train" and "time" in entry:
            ends[entry["epoch"]] = entry["time"]  # the epoch's last train line
    times = [ends[e] for e in sorted(ends)]
    return statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else float("nan")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def numbers(directory: Path) -> dict[str, float]:
    """Every number of every metrics.*.json under `directory`, by file and key (durations left out)."""
    found = {}
    for path in sorted(directory.rglob("metrics.*.json")):
        for key, value in read_json(path).items():
            if isinstance(value, (int, float)) and not any(word in key for word in VOLATILE):
                found[f"{path.relative_to(directory)}:{key}"] = float(value)
    return found


def token_digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("samples/tokens/*.npy"))}


def compare(first: Path, second: Path) -> bool:
    """Print what differs between two runs of the same command; True when nothing does."""
    a, b = numbers(first), numbers(second)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)
                       and not (a.get(k) != a.get(k) and b.get(k) != b.get(k)))  # NaN == NaN here
    tokens_a, tokens_b = token_digests(first), token_digests(second)
    print(f"\nrepeat: {len(a)} numbers and {len(tokens_a)} sampled token grids compared")
    for key in differing[:20]:
        print(f"  differs: {key}: {a.get(key)} vs {b.get(key)}")
    if tokens_a != tokens_b:
        print(f"  differs: {sum(tokens_a.get(k) != tokens_b.get(k) for k in tokens_a | tokens_b)} token grids")
    same = not differing and tokens_a == tokens_b
    print("  identical: every number and every token grid" if same else "  NOT identical")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeat", action="store_true", help="run the first seed twice and compare")
    parser.add_argument("--root", type=Path, default=Path("runs/demo_seeds"))
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    args = parser.parse_args()
    if args.root.exists() and any(args.root.iterdir()):
        sys.exit(f"{args.root}: not empty; give a new --root so that every run starts from scratch.")

    results = {seed: run_demo(args.recipe, seed, args.root / f"seed-{seed}") for seed in args.seeds}
    same = compare(Path(results[args.seeds[0]]["directory"]),
                   Path(run_demo(args.recipe, args.seeds[0], args.root / f"seed-{args.seeds[0]}-repeat")["directory"])) \
        if args.repeat else None

    print(f"\n{'figure':52s} {'target':>12s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in args.seeds)
          + f" {'median':>9s} {'range':>19s}  holds")
    summary = {}
    for label, read, test, target in TARGETS:
        values = []
        for seed in args.seeds:
            try:
                values.append(float(read(results[seed])))
            except KeyError:
                values.append(float("nan"))
        holds = all(v == v and test(v) for v in values)  # a NaN (nothing measurable) fails
        ordered = sorted(values, key=lambda v: v if v == v else -math.inf)  # NaN ranks lowest
        median = statistics.median_low(ordered) if len(ordered) % 2 else statistics.median(ordered)
        summary[label] = {"values": values, "median": median, "holds": holds}
        print(f"{label:52s} {target:>12s} " + " ".join(f"{v:9.3f}" for v in values)
              + f" {median:9.3f} {ordered[0]:9.3f}-{ordered[-1]:<9.3f}  {'yes' if holds else 'NO'}")
    for key in INFORMATIVE:
        values = [float(results[s].get(key, float("nan"))) for s in args.seeds]
        print(f"{key:52s} {'':>12s} " + " ".join(f"{v:9.3f}" for v in values) + f" {statistics.median(values):9.3f}")
    out = args.root / "summary.json"
    out.write_text(json.dumps({"seeds": args.seeds, "targets": summary, "repeat_identical": same,
                               "metrics": {str(s): results[s] for s in args.seeds}}, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
