"""Build time of the demo cohort, and how well the morphology estimates follow its truth.

    python benchmarks/demo_cohort.py [--subjects 64] [--spacing 3] [--threads 2]

Builds the cohort from scratch into a temporary folder (template reading, blurring and every
subject included; Python and library imports excluded), then measures every subject's T1 with
`brainsynth.library.morphology_measurement` and prints the Spearman correlations with the recorded
volumes. The issue's bar: 64 subjects at 3 mm in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from brainsynth.plugins.datasets.demo_cohort import build_demo_cohort
from brainsynth.library.morphology_measurement import measure_morphology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        folder = build_demo_cohort(Path(scratch) / "cohort", args.subjects, args.spacing, args.seed)
        build_seconds = time.perf_counter() - start

        with open(folder / "conditioning.tsv", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        start = time.perf_counter()
        estimates = [measure_morphology(folder / "images" / f"{row['subject']}.nii.gz") for row in rows]
        measure_seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6

    truth_v = np.array([float(r["ventricular_volume"]) for r in rows])
    truth_b = np.array([float(r["brain_volume"]) for r in rows])
    estimate_v = np.array([e.ventricular_volume for e in estimates])
    estimate_b = np.array([e.brain_volume for e in estimates])
    print(
        json.dumps(
            {
                "subjects": args.subjects,
                "spacing_mm": args.spacing,
                "threads": args.threads,
                "build_s": round(build_seconds, 1),
                "cohort_mb": round(size_mb, 1),
                "measure_s_per_subject": round(measure_seconds / len(rows), 3),
                "ventricular_ml_range": [round(truth_v.min(), 1), round(truth_v.max(), 1)],
                "brain_ml_range": [round(truth_b.min(), 1), round(truth_b.max(), 1)],
                "spearman_ventricular": round(float(stats.spearmanr(estimate_v, truth_v)[0]), 4),
                "spearman_brain": round(float(stats.spearmanr(estimate_b, truth_b)[0]), 4),
                "median_ratio_ventricular": round(float(np.median(estimate_v / truth_v)), 3),
                "median_ratio_brain": round(float(np.median(estimate_b / truth_b)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
