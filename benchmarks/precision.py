"""One training step of the demo's tokenizer in fp32 and in bf16 autocast, side by side.

Why: on a CPU, bf16 is several times faster than fp32 where the CPU has native bf16 instructions
(AMX, AVX512-BF16) and several times slower where oneDNN must emulate them. The demo's tokenizer
stage runs in bf16; this prints what that buys or costs on the machine at hand.

The network is the demo recipe's tokenizer (``baseline_vqvae``, 2 levels, 2 residual layers, 512
EMA codes of 16) on a 48x60x52 volume at batch 1; a step is forward, MSE + quantisation loss,
backward and an Adam step. Each precision runs in its own subprocess, alternating, and a
measurement is the median of its timed steps. ``--isa AVX2`` runs both with oneDNN held to AVX2
(``ONEDNN_MAX_CPU_ISA``), which shows a CPU without native bf16 on this one.

The last line is one JSON object with ``bf16_vs_fp32`` (bf16 step time / fp32 step time; below 1
means bf16 is faster) and every raw number.

    python benchmarks/precision.py                 # about 30 s on 2 cores
    python benchmarks/precision.py --isa AVX2      # as on a CPU without AMX / AVX512-BF16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def step_times(precision: str, channels: int, steps: int) -> list[float]:
    """Seconds per training step, after two warm-up steps."""
    import torch

    import brainsynth

    torch.manual_seed(0)
    network = brainsynth.build("tokenizer", {"name": "baseline_vqvae", "channels": channels, "levels": 2, "num_res_layers": 2,
                                             "embedding_dim": 16, "codebook": {"name": "ema", "num_embeddings": 512}})
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    volume = torch.rand(1, 1, 48, 60, 52)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            output = network(volume)
        loss = torch.nn.functional.mse_loss(output.reconstruction.float(), volume) + output.quantization_loss.float()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32, help="the tokenizer's deepest width")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per subprocess")
    parser.add_argument("--repeats", type=int, default=2, help="subprocesses per precision")
    parser.add_argument("--isa", help="hold oneDNN to this instruction set (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(step_times(args.worker, args.channels, args.steps)))
        return
    env = dict(os.environ)
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        for precision in times:
            command = [sys.executable, __file__, "--worker", precision, "--channels", str(args.channels),
                       "--steps", str(args.steps)]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            times[precision] += json.loads(result.stdout.strip().splitlines()[-1])
    medians = {precision: statistics.median(values) for precision, values in times.items()}
    isa = args.isa or "default"
    for precision, value in medians.items():
        print(f"{precision}: {value:.4f} s per step (median of {len(times[precision])}; oneDNN ISA {isa})")
    ratio = medians["bf16"] / medians["fp32"]
    print(f"bf16 / fp32 step time: {ratio:.2f}")
    print(json.dumps({"bf16_vs_fp32": ratio, "median_s": medians, "isa": isa, "channels": args.channels,
                      "times_s": times}))


if __name__ == "__main__":
    main()
