"""baseline_vqvae against MONAI's VQVAE at equal configuration, on CPU at batch 1.

Measures, for both networks built with the same levels, channels, residual layers, codebook and
decay:

* train-step time (forward, MSE + quantisation loss, backward, Adam step) and peak memory at
  64x64x64 and 96x112x96;
* encode + quantise time (eval mode, no grad) for one 160x224x160 volume.

Every measurement runs in its own subprocess, so peak memory is that process's high-water mark
(``ru_maxrss``) minus the high-water mark it had reached before building the model (imports and
the input volume): the same rule for both networks. Ours and MONAI's alternate, so a machine
whose load drifts penalises neither. Times are medians over the timed steps.

The last line printed is one JSON object with ``step_time_vs_monai`` and
``peak_memory_vs_monai`` (ours / MONAI's at 64^3) plus every raw number.

    python benchmarks/tokenizer.py            # the paper's width (256), about 15 min on 2 cores
    python benchmarks/tokenizer.py --quick    # width 32, one timed step each, about 1 min
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(model: str, config: dict):
    """One of the two networks at `config` (same levels, widths, codebook for both)."""
    import torch

    torch.manual_seed(0)
    channels, levels, res_layers = config["channels"], config["levels"], config["res_layers"]
    widths = tuple([channels // 2] * (levels - 1) + [channels])
    if model == "ours":
        from brainsynth.plugins.tokenizers.baseline_vqvae import BaselineVQVAE

        return BaselineVQVAE(
            channels=channels, levels=levels, num_res_layers=res_layers, embedding_dim=config["embedding_dim"],
            codebook={"name": "ema", "num_embeddings": config["num_embeddings"], "decay": 0.5},
            checkpointing=config.get("checkpointing", False),
        )
    from monai.networks.nets import VQVAE

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
    imports, plugin registry, thread pools, oneDNN) is not counted as the network's memory."""
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
    model = build(spec["model"], spec["config"])
    params = sum(p.numel() for p in model.parameters())
    times = []
    if spec["task"] == "train":
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for step in range(spec["warmup"] + spec["steps"]):
            start = time.perf_counter()
            if spec["model"] == "ours":
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
                tokens = model.encode_tokens(x) if spec["model"] == "ours" else model.index_quantize(x)
                if step >= spec["warmup"]:
                    times.append(time.perf_counter() - start)
            assert tuple(tokens.shape[1:]) == tuple(s // 2 ** spec["config"]["levels"] for s in spec["shape"])
    return {"time_s": statistics.median(times), "times_s": times, "peak_mb": peak_rss_mb() - baseline, "params": params}


def measure(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 32, one warm-up and one timed step")
    parser.add_argument("--channels", type=int, default=None, help="deepest width (default 256; 32 with --quick)")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--res-layers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed train steps per measurement (default 3)")
    parser.add_argument("--repeats", type=int, default=None, help="subprocesses per measurement (default 2)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--checkpointing", action="store_true", help="ours with activation checkpointing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    config = {
        "channels": args.channels or (32 if args.quick else 256),
        "levels": args.levels,
        "res_layers": args.res_layers,
        "num_embeddings": 2048,
        "embedding_dim": 32,
        "checkpointing": args.checkpointing,
    }
    steps = args.steps or (1 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 2)
    print(f"config: {config}; {steps} timed step(s) after 1 warm-up, {repeats} repeat(s), "
          f"{args.threads} thread(s), torch threads per process", flush=True)

    plan = [("train", name, shape, steps) for name, shape in TRAIN_SHAPES.items()]
    plan.append(("encode", "160x224x160", ENCODE_SHAPE, 1 if args.quick else 2))
    results: dict[str, dict[str, list[dict]]] = {}
    for repeat in range(repeats):
        for task, name, shape, timed in plan:
            order = ("ours", "monai") if repeat % 2 == 0 else ("monai", "ours")
            for model in order:
                spec = {"model": model, "task": task, "shape": shape, "config": config, "threads": args.threads,
                        "warmup": 1 if task == "train" or not args.quick else 0, "steps": timed}
                result = measure(spec)
                results.setdefault(f"{task} {name}", {}).setdefault(model, []).append(result)
                print(f"  {task} {name} {model}: {result['time_s']:.2f} s, peak +{result['peak_mb']:.0f} MB", flush=True)

    def summary(key: str, model: str) -> tuple[float, float, int]:
        runs = results[key][model]
        return (statistics.median(r["time_s"] for r in runs), statistics.median(r["peak_mb"] for r in runs), runs[0]["params"])

    print()
    print(f"{'measurement':<24}{'ours':>12}{'MONAI':>12}{'ours/MONAI':>12}")
    report: dict[str, float | int | dict] = {"config": config, "threads": args.threads}
    for key in results:
        ours_t, ours_m, ours_p = summary(key, "ours")
        monai_t, monai_m, monai_p = summary(key, "monai")
        slug = key.replace(" ", "_").replace("^", "")
        print(f"{key + ' time (s)':<24}{ours_t:>12.2f}{monai_t:>12.2f}{ours_t / monai_t:>12.2f}")
        report[f"{slug}_time_s"] = {"ours": ours_t, "monai": monai_t}
        if key.startswith("train"):
            print(f"{key + ' peak (MB)':<24}{ours_m:>12.0f}{monai_m:>12.0f}{ours_m / monai_m:>12.2f}")
            report[f"{slug}_peak_mb"] = {"ours": ours_m, "monai": monai_m}
        report["parameters"] = {"ours": ours_p, "monai": monai_p}
    print(f"{'parameters':<24}{report['parameters']['ours']:>12,}{report['parameters']['monai']:>12,}")
    first = f"train {next(iter(TRAIN_SHAPES))}"
    ours_t, ours_m, _ = summary(first, "ours")
    monai_t, monai_m, _ = summary(first, "monai")
    report["step_time_vs_monai"] = round(ours_t / monai_t, 3)
    report["peak_memory_vs_monai"] = round(ours_m / monai_m, 3)
    print(f"\nat 64^3: step time ours/MONAI = {report['step_time_vs_monai']}, "
          f"peak memory ours/MONAI = {report['peak_memory_vs_monai']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
