"""Sampling speed of one brain's token grid (10x14x10 = 1400 tokens) on CPU, side by side.

Compared at equal size (dim 256, depth 8, heads 8 x 32, 4-token cross-attention context,
vocabulary 2048 + BOS, plain temperature-1 sampling without top-k):

- brainsynth: the `xtransformer` prior sampled by `brainsynth.core.sampling.sample` (KV cache);
  also with the original's 3D spatial relative position bias;
- x-transformers: `AutoregressiveWrapper.generate(cache_kv=True, context=...)`;
- MONAI: `VQVAETransformerInferer.sample` with a `DecoderOnlyTransformer` (no cache).

Classifier-free guidance: the same `xtransformer`, built with conditioning dropout (null
vectors), samples the same batch of B brains unguided and with ``guidance_scale`` 3 (one
decoder over 2B rows: the conditioned and the null branch), alternately ``--guidance-repeats``
times; the medians give the guided cost per brain relative to the unguided one (target <= 2.2x).

MONAI re-runs the whole prefix for every token, so one brain takes minutes. At batch 1 it is
measured over the full length unless ``--tokens`` limits the run; at larger batches it is measured
over a prefix (``--monai-prefix``) and extrapolated to the full length only if its per-token cost
grows linearly with the position (checked on binned medians of the per-step times); the output
says which numbers are extrapolated. Tokens/s counts every token generated in the batch.

Threads: torch is set to ``--threads`` (2). brainsynth's sampler decodes small batches on one
intra-op thread by default (its documented policy). To keep the comparison fair, each peer is
first probed at 1 and at ``--threads`` threads (x-transformers: ``--probe`` generated tokens;
MONAI: one step at two thirds of the measured length) and then measured with whichever was
faster; the probe results are printed.

    python benchmarks/sampling.py              # full run (~25 min on 2 cores; MONAI dominates)
    python benchmarks/sampling.py --tokens 350 # quick run
    python benchmarks/sampling.py --tokens 350 --skip-monai   # quick, without MONAI

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import numpy as np
import torch

GRID = (10, 14, 10)
CODES = 2048
DIM, DEPTH, HEADS, DIM_HEAD, CONTEXT = 256, 8, 8, 32, 4


def parameters(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# ---------------------------------------------------------------------------------------------
# brainsynth
def build_brainsynth(spatial_bias: bool, dropout: float = 0.0):
    from brainsynth.plugins.conditioning.cross_attend import CrossAttend
    from brainsynth.plugins.orderings.raster_scan import RasterScan
    from brainsynth.plugins.transformers.xtransformer import XTransformerPrior

    torch.manual_seed(0)
    conditioning = CrossAttend([{"column": f"c{i}"} for i in range(CONTEXT)], model_dim=DIM, dropout=dropout)
    return XTransformerPrior(
        dim=DIM, depth=DEPTH, heads=HEADS, attn_dim_head=DIM_HEAD, rotary_emb_dim=DIM_HEAD,
        spatial_rel_pos_bias=spatial_bias, num_tokens=CODES + 1,
        ordering=RasterScan(spatial_shape=GRID), conditioning=conditioning,
    ).eval()


def time_brainsynth(prior, batch: int, tokens: int, guidance_scale: float = 1.0) -> float:
    from brainsynth.core.sampling import sample

    values = {f"c{i}": torch.rand(batch) for i in range(CONTEXT)}
    sample(prior, batch, values, length=8, guidance_scale=guidance_scale)  # warm-up
    start = time.perf_counter()
    out = sample(prior, batch, values, length=tokens, generator=torch.Generator().manual_seed(0),
                 guidance_scale=guidance_scale)
    elapsed = time.perf_counter() - start
    assert out.shape == (batch, tokens) and (out < CODES).all()
    return elapsed


GUIDANCE_SCALE = 3.0


def time_guidance(prior, batch: int, tokens: int, repeats: int) -> dict:
    """Median seconds of unguided and guided sampling of the same B brains, measured alternately."""
    plain, guided = [], []
    for _ in range(repeats):
        plain.append(time_brainsynth(prior, batch, tokens))
        guided.append(time_brainsynth(prior, batch, tokens, GUIDANCE_SCALE))
    plain_s, guided_s = float(np.median(plain)), float(np.median(guided))
    return {"unguided_s": plain_s, "guided_s": guided_s, "cost_ratio_per_brain": guided_s / plain_s,
            "unguided_runs_s": plain, "guided_runs_s": guided}


# ---------------------------------------------------------------------------------------------
# x-transformers
def build_xtransformers():
    from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

    torch.manual_seed(0)
    net = TransformerWrapper(
        num_tokens=CODES + 1, max_seq_len=math.prod(GRID) + 1, use_abs_pos_emb=False,
        attn_layers=Decoder(dim=DIM, depth=DEPTH, heads=HEADS, attn_dim_head=DIM_HEAD, rotary_pos_emb=True,
                            rotary_emb_dim=DIM_HEAD, cross_attend=True),
    )
    return AutoregressiveWrapper(net).eval()


def time_xtransformers(model, batch: int, tokens: int) -> float:
    prompt = torch.full((batch, 1), CODES, dtype=torch.long)
    context = torch.randn(batch, CONTEXT, DIM)

    def no_filter(logits, **_):
        return logits

    with torch.inference_mode():
        model.generate(prompt, 8, context=context, cache_kv=True, filter_logits_fn=no_filter)
        start = time.perf_counter()
        out = model.generate(prompt, tokens, context=context, cache_kv=True, filter_logits_fn=no_filter)
        elapsed = time.perf_counter() - start
    assert out.shape == (batch, tokens)
    return elapsed


# ---------------------------------------------------------------------------------------------
# MONAI
def build_monai():
    from monai.networks.nets import DecoderOnlyTransformer

    torch.manual_seed(0)
    return DecoderOnlyTransformer(
        num_tokens=CODES + 1, max_seq_len=math.prod(GRID) + 1, attn_layers_dim=DIM, attn_layers_depth=DEPTH,
        attn_layers_heads=HEADS, with_cross_attention=True,
    ).eval()


def time_monai(transformer, batch: int, tokens: int) -> tuple[float, np.ndarray]:
    """Seconds for `tokens` steps of MONAI's sampler, and each step's duration (decoding excluded)."""
    from monai.inferers import VQVAETransformerInferer
    from monai.networks.nets import VQVAE
    from monai.utils.ordering import Ordering

    if tokens == math.prod(GRID):
        latent, ordering = GRID, Ordering("raster_scan", spatial_dims=3, dimensions=(1, *GRID))
    else:  # a prefix: a 1 x N latent
        latent, ordering = (1, tokens), Ordering("raster_scan", spatial_dims=2, dimensions=(1, 1, tokens))
    # a real (tiny, stride-1) MONAI VQ-VAE, only so that `sample` can decode at the end; not timed
    vqvae = VQVAE(
        spatial_dims=len(latent), in_channels=1, out_channels=1, channels=(4,), num_res_layers=1, num_res_channels=(4,),
        downsample_parameters=((1, 3, 1, 1),), upsample_parameters=((1, 3, 1, 1, 0),), num_embeddings=CODES, embedding_dim=4,
    ).eval()
    stamps: list[float] = []
    hook = transformer.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    context = torch.randn(batch, CONTEXT, DIM)
    inferer = VQVAETransformerInferer()
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            inferer.sample(latent, torch.full((batch, 1), CODES), vqvae, transformer, ordering, conditioning=context, verbose=False)
    finally:
        hook.remove()
    steps = np.diff(np.array([start] + stamps))
    return stamps[-1] - start, steps


def time_monai_step(transformer, batch: int, prefix: int) -> float:
    """Seconds of one MONAI sampling step at a given prefix length (best of 3 forwards)."""
    x = torch.full((batch, prefix), 7, dtype=torch.long)
    context = torch.randn(batch, CONTEXT, DIM)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            transformer(x=x, context=context)
            best = min(best, time.perf_counter() - start)
    return best


def extrapolate(steps: np.ndarray, total: int) -> dict:
    """Fit per-step cost = a + b*t on binned medians; extrapolate to `total` steps only if linear."""
    bins = max(len(steps) // 10, 1)
    usable = steps[5 : 5 + bins * 10] if len(steps) > 15 else steps
    groups = np.array_split(usable, max(len(usable) // 10, 1))
    centres = np.array([5 + 10 * i + len(g) / 2 for i, g in enumerate(groups)])
    medians = np.array([np.median(g) for g in groups])
    slope, intercept = np.polyfit(centres, medians, 1)
    predicted = intercept + slope * centres
    r2 = 1 - ((medians - predicted) ** 2).sum() / max(((medians - medians.mean()) ** 2).sum(), 1e-30)
    linear = bool(slope > 0 and r2 >= 0.9)
    t = np.arange(total)
    seconds = float((intercept + slope * t).sum())
    return {"linear": linear, "r2": float(r2), "intercept_s": float(intercept), "slope_s_per_token": float(slope),
            "extrapolated_seconds": seconds if linear else None}


def with_threads(threads: int, fn, *args):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(previous)


def faster_threads(name: str, fn, model, batch: int, probe: int, options: list[int]) -> int:
    """Probe `fn` at each thread count over `probe` tokens; return the faster count."""
    rates = {}
    for threads in options:
        seconds = with_threads(threads, fn, model, batch, probe)
        rates[threads] = batch * probe / (seconds[0] if isinstance(seconds, tuple) else seconds)
    best = max(rates, key=rates.get)
    shown = ", ".join(f"{t} thread{'s' if t > 1 else ''} {r:.1f} tok/s" for t, r in rates.items())
    print(f"batch {batch}: probe {name} over {probe} tokens: {shown} -> {best}", flush=True)
    return best


# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=math.prod(GRID), help="tokens per sequence (quick run: 350)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--monai-prefix", type=int, default=350, help="MONAI prefix at batch sizes > 1")
    parser.add_argument("--probe", type=int, default=64, help="tokens per thread-count probe of each peer")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--guidance-repeats", type=int, default=3, help="alternating unguided/guided runs (median)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    full = math.prod(GRID)
    tokens = min(args.tokens, full)
    load_before = os.getloadavg()

    ours, ours_bias, xt = build_brainsynth(False), build_brainsynth(True), build_xtransformers()
    ours_nulls = build_brainsynth(False, dropout=0.1)  # the same prior with null vectors, for guidance
    monai = None if args.skip_monai else build_monai()
    print(f"# sampling {tokens} of {full} tokens ({'x'.join(map(str, GRID))}), torch {torch.__version__}, "
          f"{args.threads} threads, load average before {load_before[0]:.2f}")
    print(f"# parameters (M): brainsynth {parameters(ours):.2f}, brainsynth+spatial bias {parameters(ours_bias):.2f}, "
          f"x-transformers {parameters(xt):.2f}" + ("" if monai is None else f", MONAI {parameters(monai):.2f}"))

    results: dict = {}
    notes: list[str] = []
    for batch in args.batch_sizes:
        row: dict = {}
        seconds = time_brainsynth(ours, batch, tokens)
        row["brainsynth"] = batch * tokens / seconds
        print(f"batch {batch}: brainsynth                 {seconds:8.1f} s  {row['brainsynth']:8.1f} tok/s", flush=True)
        seconds = time_brainsynth(ours_bias, batch, tokens)
        row["brainsynth_spatial_bias"] = batch * tokens / seconds
        print(f"batch {batch}: brainsynth + spatial bias  {seconds:8.1f} s  {row['brainsynth_spatial_bias']:8.1f} tok/s", flush=True)
        guidance = time_guidance(ours_nulls, batch, tokens, args.guidance_repeats)
        row["guidance"] = guidance
        print(f"batch {batch}: brainsynth unguided        {guidance['unguided_s']:8.1f} s  "
              f"{batch * tokens / guidance['unguided_s']:8.1f} tok/s  [median of {args.guidance_repeats}]", flush=True)
        print(f"batch {batch}: brainsynth guided (x{GUIDANCE_SCALE:g})    {guidance['guided_s']:8.1f} s  "
              f"{batch * tokens / guidance['guided_s']:8.1f} tok/s  [{2 * batch} rows decoded; "
              f"{guidance['cost_ratio_per_brain']:.2f}x the unguided cost per brain]", flush=True)
        thread_options = sorted({1, args.threads})
        threads = faster_threads("x-transformers", time_xtransformers, xt, batch, args.probe, thread_options)
        seconds = with_threads(threads, time_xtransformers, xt, batch, tokens)
        row["xtransformers_cached"] = batch * tokens / seconds
        row["xtransformers_threads"] = threads
        print(f"batch {batch}: x-transformers cache_kv    {seconds:8.1f} s  {row['xtransformers_cached']:8.1f} tok/s"
              f"  [{threads} thread(s)]", flush=True)
        if monai is not None:
            measured = tokens if batch == 1 else min(tokens, args.monai_prefix)
            prefix = max(2 * measured // 3, 1)
            steps_s = {t: with_threads(t, time_monai_step, monai, batch, prefix) for t in thread_options}
            threads = min(steps_s, key=steps_s.get)
            shown = ", ".join(f"{t} thread(s) {1e3 * v:.0f} ms" for t, v in steps_s.items())
            print(f"batch {batch}: probe MONAI step at prefix {prefix}: {shown} -> {threads}", flush=True)
            row["monai_threads"] = threads
            seconds, steps = with_threads(threads, time_monai, monai, batch, measured)
            fit = extrapolate(steps, tokens)
            if measured == tokens:
                row["monai"] = batch * tokens / seconds
                kind = "measured"
            elif fit["linear"]:
                row["monai"] = batch * tokens / fit["extrapolated_seconds"]
                kind = (f"EXTRAPOLATED from {measured} tokens (per-token cost linear in position, R^2 {fit['r2']:.3f}; "
                        f"{fit['extrapolated_seconds']:.0f} s for {tokens})")
                notes.append(f"MONAI batch {batch}: {kind}")
            else:
                row["monai"] = batch * measured / seconds
                kind = f"over the first {measured} tokens only (per-token cost not linear, R^2 {fit['r2']:.3f}: not extrapolated)"
                notes.append(f"MONAI batch {batch}: {kind}")
            row["monai_fit"] = fit
            print(f"batch {batch}: MONAI (no cache)           {seconds:8.1f} s  {row['monai']:8.2f} tok/s  "
                  f"[{threads} thread(s); {kind}]", flush=True)
        results[f"batch_{batch}"] = row

    print("\nratios (tokens/s of brainsynth / peer):")
    for batch in args.batch_sizes:
        row = results[f"batch_{batch}"]
        line = f"  batch {batch}: vs x-transformers cached {row['brainsynth'] / row['xtransformers_cached']:.2f}x"
        if "monai" in row:
            line += f", vs MONAI {row['brainsynth'] / row['monai']:.1f}x"
        line += f"; with spatial bias vs x-transformers {row['brainsynth_spatial_bias'] / row['xtransformers_cached']:.2f}x"
        print(line)
    print("guided / unguided cost per brain (target <= 2.2x):")
    for batch in args.batch_sizes:
        print(f"  batch {batch}: {results[f'batch_{batch}']['guidance']['cost_ratio_per_brain']:.2f}x")
    for note in notes:
        print(f"note: {note}")
    load_after = os.getloadavg()
    print(f"# load average after {load_after[0]:.2f} (2-core machine shared with other jobs)")
    first = results[f"batch_{args.batch_sizes[0]}"]
    summary = {
        "tokens": tokens,
        "batch": args.batch_sizes[0],
        "threads": args.threads,
        "speedup_vs_xtransformers": round(first["brainsynth"] / first["xtransformers_cached"], 3),
        "speedup_vs_monai": round(first["brainsynth"] / first["monai"], 2) if "monai" in first else None,
        "guidance_cost_ratio": {f"batch_{b}": round(results[f"batch_{b}"]["guidance"]["cost_ratio_per_brain"], 3)
                                for b in args.batch_sizes},
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "results": results,
        "notes": notes,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
