"""baseline_vqvae against MONAI's VQVAE at equal configuration, on CPU at batch 1.

Both networks are built with the same levels, channel plan, residual layers, codebook (EMA,
2048 x 32, decay 0.5) and kernels. MONAI's residual unit cannot be "slim" (its second conv is
3x3x3, the original's is 1x1x1), so at equal configuration MONAI has more parameters; the table
prints both counts. Measured:

* train-step time (forward, MSE + quantisation loss, zero_grad, backward, Adam step — the order
  of brainsynth's training loop) and peak memory at 64x64x64 and 96x112x96, for ours with its
  defaults, ours with ``checkpointing: true``, and MONAI with its defaults;
* encode + quantise time (eval mode, no grad) of one 160x224x160 volume.

Every measurement runs in its own subprocess. Peak memory is the process's high-water mark
(``ru_maxrss``) minus the high-water mark it had reached after importing both libraries, running
one tiny conv forward/backward (thread pools, oneDNN) and allocating the input: the same rule
for every network. The subprocesses run with ``MALLOC_MMAP_THRESHOLD_=1048576`` so that glibc
returns every freed block of 1 MB or more to the system at once: without it, freed activations
stay cached in the heap by chance, and the high-water mark of the same network varies by about
100 MB from run to run. Runs alternate between the networks so that a machine whose load drifts
penalises none of them, and the time of a measurement is its fastest timed step (the one least
disturbed by other processes; the median is printed too).

The last line is one JSON object with ``step_time_vs_monai`` and ``peak_memory_vs_monai`` (ours
with defaults / MONAI at 64^3), the same at 96x112x96 (``..._96x112x96``) and for checkpointing
(``..._checkpointing``), and every raw number.

    python benchmarks/tokenizer.py            # the paper's width (256): about 20 min on 2 cores
    python benchmarks/tokenizer.py --quick    # width 32, one timed step each: about 1 min
    python benchmarks/tokenizer.py --only train96 --no-checkpointing --repeats 2   # one row, re-measured
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TRAIN_SHAPES = {"64^3": (64, 64, 64), "96x112x96": (96, 112, 96)}
ENCODE_SHAPE = (160, 224, 160)
VARIANTS = {"ours": "ours (defaults)", "ours_ckpt": "ours (checkpointing)", "monai": "MONAI VQVAE"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(variant: str, config: dict):
    """One of the networks at `config` (same levels, widths, codebook for all)."""
    import torch

    torch.manual_seed(0)
    channels, levels, res_layers = config["channels"], config["levels"], config["res_layers"]
    if variant.startswith("ours"):
        import brainsynth

        return brainsynth.build("tokenizer", {
            "name": "baseline_vqvae", "channels": channels, "levels": levels, "num_res_layers": res_layers,
            "embedding_dim": config["embedding_dim"], "checkpointing": variant == "ours_ckpt",
            "codebook": {"name": "ema", "num_embeddings": config["num_embeddings"], "decay": 0.5},
        })
    from monai.networks.nets import VQVAE

    widths = tuple([channels // 2] * (levels - 1) + [channels])
    return VQVAE(
        spatial_dims=3, in_channels=1, out_channels=1, channels=widths, num_res_layers=res_layers,
        num_res_channels=widths,
        downsample_parameters=((2, 4, 1, 1),) * levels,  # MONAI order: stride, kernel, dilation, padding
        upsample_parameters=((2, 4, 1, 1, 0),) * levels,  # ... output_padding
        num_embeddings=config["num_embeddings"], embedding_dim=config["embedding_dim"], decay=0.5,
        commitment_cost=0.25, epsilon=1e-5, ddp_sync=False,
    )


def warm_up_libraries() -> None:
    """Import both networks and run a tiny conv forward/backward so that one-time set-up (module
    imports, plugin registry, thread pools, oneDNN) is not counted as a network's memory."""
    import torch
    from monai.networks.nets import VQVAE  # noqa: F401

    from brainsynth.core.plugins import registry
    from brainsynth.plugins.tokenizers.baseline_vqvae import BaselineVQVAE  # noqa: F401

    registry()
    for module in (torch.nn.Conv3d(8, 8, 3, padding=1), torch.nn.ConvTranspose3d(8, 8, 4, stride=2, padding=1)):
        module(torch.rand(1, 8, 24, 24, 24, requires_grad=True)).sum().backward()


def worker(spec: dict) -> dict:
    """Run one measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(spec["threads"])
    warm_up_libraries()
    torch.manual_seed(0)
    x = torch.rand(1, 1, *spec["shape"])
    baseline = peak_rss_mb()
    model = build(spec["variant"], spec["config"])
    ours = spec["variant"].startswith("ours")
    params = sum(p.numel() for p in model.parameters())
    times = []
    if spec["task"] == "train":
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for step in range(spec["warmup"] + spec["steps"]):
            start = time.perf_counter()
            if ours:
                out = model(x)
                reconstruction, quantization_loss = out.reconstruction, out.quantization_loss
            else:
                reconstruction, quantization_loss = model(x)
            loss = torch.nn.functional.mse_loss(reconstruction, x) + quantization_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            del reconstruction, quantization_loss, loss
            if step >= spec["warmup"]:
                times.append(time.perf_counter() - start)
    else:
        model.eval()
        with torch.no_grad():
            for step in range(spec["warmup"] + spec["steps"]):
                start = time.perf_counter()
                tokens = model.encode_tokens(x) if ours else model.index_quantize(x)
                if step >= spec["warmup"]:
                    times.append(time.perf_counter() - start)
        expected = tuple(s // 2 ** spec["config"]["levels"] for s in spec["shape"])
        assert tuple(tokens.shape[1:]) == expected, (tuple(tokens.shape), expected)
    return {"times_s": times, "peak_mb": peak_rss_mb() - baseline, "params": params}


def measure(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MALLOC_MMAP_THRESHOLD_="1048576")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 32, one warm-up and one timed step each")
    parser.add_argument("--channels", type=int, default=None, help="deepest width (default 256; 32 with --quick)")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--res-layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="subprocesses per measurement and network")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="+", choices=("train64", "train96", "encode"),
                        help="run only these measurements (default: all three)")
    parser.add_argument("--no-checkpointing", action="store_true", help="leave out ours with checkpointing: true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    config = {"channels": args.channels or (32 if args.quick else 256), "levels": args.levels,
              "res_layers": args.res_layers, "num_embeddings": 2048, "embedding_dim": 32}
    # (task, name, shape, variants, warm-up steps, timed steps)
    trained = ("ours", "monai") if args.no_checkpointing else ("ours", "monai", "ours_ckpt")
    plan = [
        ("train", "64^3", TRAIN_SHAPES["64^3"], trained, 1, 1 if args.quick else 2),
        ("train", "96x112x96", TRAIN_SHAPES["96x112x96"], trained, 1, 1),
        ("encode", "160x224x160", ENCODE_SHAPE, ("ours", "monai"), 0, 1),
    ]
    plan = [p for p, key in zip(plan, ("train64", "train96", "encode")) if not args.only or key in args.only]
    print(f"config: {config}; {args.repeats} repeat(s); {args.threads} torch thread(s) per process", flush=True)
    results: dict[str, dict[str, list[dict]]] = {}
    for repeat in range(args.repeats):
        for task, name, shape, variants, warmup, steps in plan:
            for variant in variants if repeat % 2 == 0 else tuple(reversed(variants)):
                spec = {"variant": variant, "task": task, "shape": shape, "config": config,
                        "threads": args.threads, "warmup": warmup, "steps": steps}
                result = measure(spec)
                results.setdefault(f"{task} {name}", {}).setdefault(variant, []).append(result)
                print(f"  {task} {name} {VARIANTS[variant]}: steps {[round(t, 2) for t in result['times_s']]} s, "
                      f"peak +{result['peak_mb']:.0f} MB", flush=True)

    def best(key: str, variant: str) -> float:
        return min(t for r in results[key][variant] for t in r["times_s"])

    def median_time(key: str, variant: str) -> float:
        return statistics.median(t for r in results[key][variant] for t in r["times_s"])

    def peak(key: str, variant: str) -> float:
        return statistics.median(r["peak_mb"] for r in results[key][variant])

    report: dict = {"config": config, "threads": args.threads, "repeats": args.repeats}
    print(f"\n{'measurement':<36}{'ours':>10}{'ours ckpt':>11}{'MONAI':>10}{'ours/MONAI':>12}{'ckpt/MONAI':>12}")
    for key, variants in ((f"{t} {n}", v) for t, n, _, v, _, _ in plan):
        slug = key.replace(" ", "_").replace("^", "")
        for label, fn, fmt, unit in (("time (s)", best, "{:>10.2f}", "time_s"), ("median time (s)", median_time, "{:>10.2f}", "median_time_s"),
                                     ("peak (MB)", peak, "{:>10.0f}", "peak_mb")):
            if key.startswith("encode") and unit == "peak_mb":
                continue
            values = {v: fn(key, v) for v in variants}
            report[f"{slug}_{unit}"] = {v: round(x, 3) for v, x in values.items()}
            row = f"{key + ' ' + label:<36}" + fmt.format(values["ours"])
            row += (" " + fmt.format(values["ours_ckpt"])) if "ours_ckpt" in values else f"{'':>11}"
            row += fmt.format(values["monai"]) + f"{values['ours'] / values['monai']:>12.2f}"
            if "ours_ckpt" in values:
                row += f"{values['ours_ckpt'] / values['monai']:>12.2f}"
            print(row)
    params = {v: next(iter(results.values()))[v][0]["params"] for v in ("ours", "monai")}
    report["parameters"] = params
    print(f"{'parameters':<36}{params['ours']:>10,}{'':>11}{params['monai']:>10,}")
    for name, suffix in (("64^3", ""), ("96x112x96", "_96x112x96")):
        key = f"train {name}"
        if key not in results:
            continue
        for variant, label in (("ours", ""), ("ours_ckpt", "_checkpointing")):
            if variant in results[key]:
                report[f"step_time_vs_monai{suffix}{label}"] = round(best(key, variant) / best(key, "monai"), 3)
                report[f"peak_memory_vs_monai{suffix}{label}"] = round(peak(key, variant) / peak(key, "monai"), 3)
        print(f"\nat {name}, ours/MONAI: step time {report[f'step_time_vs_monai{suffix}']}, "
              f"peak memory {report[f'peak_memory_vs_monai{suffix}']}; targets: time <= 1.0, memory <= 0.8")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
