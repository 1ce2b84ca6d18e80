"""Sampling speed of the paper's two prior architectures, as brainsynth imports them.

Three measurements, each printed with its ratio in the same run:

1. ``original_xtransformer`` (the original's x-transformers 0.25.4 decoder, re-implemented, with
   its key/value cache) against brainsynth's own ``xtransformer`` (cached) at equal size and with
   the published UKB options (rotary, RMSNorm, gated values, 3D spatial bias, cross-attention on
   4 tiled raw values). Target: ``original_xtransformer`` takes at most 1.5x the time.
2. ``performer`` with its recurrent decoder (FAVOR+ running state, local-window cache) against the
   same network re-running the whole prefix per token (the generic decoder; the original's only
   way), on the full 1400-token grid. Target: at least 50x.
3. ``--device cuda`` only: the UKB-size ``original_xtransformer`` (dim 1024, depth 36, 16 heads,
   684 M parameters, 1400 tokens) in bf16 at large batches, printed as brains per hour; the goal
   is 100,000 brains in under 3 hours on one GPU. Before timing, a CUDA check that the cached
   decoders give the full forward's greedy tokens for both priors (fp32).

Weights are random: speed does not depend on them. Threads: ``--threads`` (2) on CPU; the sampler
decodes batches of up to 8 on one thread (its documented policy), so both sides get the same.

    python benchmarks/pretrained_sampling.py                 # CPU, ~5 min on 2 cores
    python benchmarks/pretrained_sampling.py --device cuda   # GPU parts (3) plus (1) and (2) on the GPU

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import torch

GRID = (10, 14, 10)
CODES = 2048
CONTEXT = 4
UKB = {"dim": 1024, "depth": 36, "heads": 16}


def registry():
    from brainsynth.core import plugins

    return plugins.registry()


def build_prior(name: str, options: dict, conditioning_name: str = "cross_attend", seed: int = 0):
    """A prior built through the registry exactly as a recipe would build it (tiled raw conditioning)."""
    reg = registry()
    torch.manual_seed(seed)
    ordering = reg.build(
        "ordering",
        {"name": "raster_scan", "rot90_axes": [[0, 1]], "transpositions_axes": [[2, 0, 1]],
         "transformation_order": ["rotate_90", "transpose"]},
        spatial_shape=GRID,
    )
    variables = [{"column": f"c{i}", "normalize": "none"} for i in range(CONTEXT)]
    conditioning = reg.build(
        "conditioning",
        {"name": conditioning_name, "variables": variables, "continuous_embedding": "tiled", "order": "last_first"},
        model_dim=options["dim"], num_levels={},
    )
    block = {"name": name, **options}
    return reg.build("transformer", block, num_tokens=CODES + 1, ordering=ordering, conditioning=conditioning,
                     max_seq_len=math.prod(GRID)).eval()


def original_options(dim: int, depth: int, heads: int) -> dict:
    """The published UKB options of the original xtransformer (ukb_transformer.sh), at a given size."""
    return {"dim": dim, "depth": depth, "heads": heads, "position_emb": "rotary", "use_rmsnorm": True,
            "attn_gate_values": True, "spatial_rel_pos_bias": True}


def modern_options(dim: int, depth: int, heads: int) -> dict:
    """brainsynth's own xtransformer with the same shape and the closest options (dim_head 64)."""
    return {"dim": dim, "depth": depth, "heads": heads, "attn_dim_head": 64, "rotary_pos_emb": True,
            "rotary_emb_dim": 32, "use_rmsnorm": True, "attn_gate_values": True, "spatial_rel_pos_bias": True}


def performer_options(dim: int, depth: int, heads: int, local_heads: int, window: int) -> dict:
    return {"dim": dim, "depth": depth, "heads": heads, "local_attn_heads": local_heads,
            "local_window_size": window, "position_emb": "rotary", "feature_redraw_interval": 1}


def values(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {f"c{i}": torch.rand(batch, device=device) for i in range(CONTEXT)}


def time_sampling(prior, batch: int, tokens: int, use_cache: bool = True, dtype: torch.dtype | None = None) -> float:
    """Seconds to draw `tokens` tokens for `batch` sequences (after a short warm-up)."""
    from brainsynth.core.sampling import sample

    device = next(prior.parameters()).device
    conditions = values(batch, device)
    generator = torch.Generator(device=device).manual_seed(0)
    sample(prior, batch, conditions, length=min(8, tokens), use_cache=use_cache, generator=generator)
    synchronize(device)
    start = time.perf_counter()
    out = sample(prior, batch, conditions, length=tokens, use_cache=use_cache, generator=generator)
    synchronize(device)
    elapsed = time.perf_counter() - start
    assert out.shape == (batch, tokens) and bool((out < CODES).all())
    return elapsed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def greedy_agrees(prior, batch: int, tokens: int) -> tuple[bool, int]:
    """Cached greedy tokens == full-forward greedy tokens? (and the first position that differs, or -1)."""
    from brainsynth.core.sampling import sample

    device = next(prior.parameters()).device
    torch.manual_seed(1)
    conditions = values(batch, device)
    cached = sample(prior, batch, conditions, length=tokens, greedy=True)
    full = sample(prior, batch, conditions, length=tokens, greedy=True, use_cache=False)
    differ = (cached != full).any(dim=0).nonzero()
    return bool(differ.numel() == 0), int(differ[0]) if differ.numel() else -1


# ---------------------------------------------------------------------------------------------
def compare_xtransformers(device: torch.device, batches: list[int], tokens: int, size: tuple[int, int, int]) -> dict:
    dim, depth, heads = size
    original = build_prior("original_xtransformer", original_options(dim, depth, heads)).to(device)
    modern = build_prior("xtransformer", modern_options(dim, depth, heads)).to(device)
    print(f"# (1) original_xtransformer {millions(original):.2f} M vs xtransformer {millions(modern):.2f} M "
          f"parameters (dim {dim}, depth {depth}, {heads} heads x 64), {tokens} tokens", flush=True)
    rows = {}
    for batch in batches:
        t_original = time_sampling(original, batch, tokens)
        t_modern = time_sampling(modern, batch, tokens)
        rows[f"batch_{batch}"] = {
            "original_xtransformer_tok_s": batch * tokens / t_original,
            "xtransformer_tok_s": batch * tokens / t_modern,
            "time_ratio": t_original / t_modern,
        }
        print(f"batch {batch}: original_xtransformer {t_original:7.1f} s {batch * tokens / t_original:8.1f} tok/s | "
              f"xtransformer {t_modern:7.1f} s {batch * tokens / t_modern:8.1f} tok/s | "
              f"time ratio {t_original / t_modern:.2f}x (target <= 1.5x)", flush=True)
    return rows


def compare_performer(device: torch.device, tokens: int, uncached_tokens: int, size: tuple[int, int, int]) -> dict:
    dim, depth, heads = size
    prior = build_prior("performer", performer_options(dim, depth, heads, heads // 2, 420)).to(device)
    print(f"# (2) performer {millions(prior):.2f} M parameters (dim {dim}, depth {depth}, {heads} heads of which "
          f"{heads // 2} local, window 420), batch 1", flush=True)
    t_cached = time_sampling(prior, 1, tokens)
    t_full = time_sampling(prior, 1, uncached_tokens, use_cache=False)
    note = "measured"
    if uncached_tokens < tokens:
        # the uncached step re-reads the prefix: its cost grows with the position, so scaling the
        # measured prefix by (tokens / prefix)^2 is the linear-growth estimate; say so
        t_full *= (tokens / uncached_tokens) ** 2
        note = f"extrapolated from {uncached_tokens} tokens by (L/prefix)^2"
    ratio = t_full / t_cached
    print(f"performer recurrent {t_cached:7.1f} s {tokens / t_cached:8.1f} tok/s | re-running the prefix "
          f"{t_full:8.1f} s {tokens / t_full:8.2f} tok/s ({note}) | speed-up {ratio:.0f}x (target >= 50x)", flush=True)
    return {"recurrent_tok_s": tokens / t_cached, "uncached_tok_s": tokens / t_full, "speedup": ratio, "uncached": note}


def ukb_brains_per_hour(device: torch.device, batches: list[int], dtype: torch.dtype) -> dict:
    prior = build_prior("original_xtransformer", original_options(**UKB)).to(device=device, dtype=dtype)
    print(f"# (3) UKB-size original_xtransformer {millions(prior):.1f} M parameters, {dtype}, "
          f"{math.prod(GRID)} tokens per brain", flush=True)
    rows = {}
    for batch in batches:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds = time_sampling(prior, batch, math.prod(GRID))
        except torch.OutOfMemoryError:
            print(f"batch {batch}: out of memory", flush=True)
            torch.cuda.empty_cache()
            break
        per_hour = batch * 3600 / seconds
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        rows[f"batch_{batch}"] = {"seconds": seconds, "brains_per_hour": per_hour, "peak_gib": peak}
        print(f"batch {batch}: {seconds:7.1f} s for {batch} brains -> {per_hour:9.0f} brains/hour "
              f"(100,000 in {100_000 / per_hour:.2f} h), peak {peak:.1f} GiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=math.prod(GRID))
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes of (1)")
    parser.add_argument("--size", type=int, nargs=3, default=None, metavar=("DIM", "DEPTH", "HEADS"),
                        help="size of (1) and (2); default 256 8 4 on CPU, UKB size on CUDA")
    parser.add_argument("--uncached-tokens", type=int, default=None,
                        help="tokens of the uncached performer run (default: all on CPU)")
    parser.add_argument("--ukb-batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--skip", nargs="*", default=[], choices=["xtransformer", "performer", "ukb", "check"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokens = min(args.tokens, math.prod(GRID))
    cuda = device.type == "cuda"
    summary: dict = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "tokens": tokens,
                     "threads": args.threads, "torch": torch.__version__, "load_average_before": os.getloadavg()[0]}
    print(f"# {summary['device']}, torch {torch.__version__}, {args.threads} CPU threads, "
          f"load average {summary['load_average_before']:.2f}", flush=True)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        if "check" not in args.skip:
            checks = {}
            for name, options in (("original_xtransformer", original_options(128, 2, 2)),
                                  ("performer", performer_options(128, 2, 2, 1, 420))):
                prior = build_prior(name, options).to(device)
                ok, first = greedy_agrees(prior, 4, 300)
                checks[name] = {"greedy_equal": ok, "first_difference": first}
                print(f"CUDA check {name}: cached greedy == full forward greedy over 300 tokens x 4: {ok}", flush=True)
            summary["cuda_checks"] = checks
    size = tuple(args.size) if args.size else ((UKB["dim"], UKB["depth"], UKB["heads"]) if cuda else (256, 8, 4))
    if "xtransformer" not in args.skip:
        batches = args.batches or ([64] if cuda else [1, 8])
        summary["xtransformer_comparison"] = compare_xtransformers(device, batches, tokens, size)
    if "performer" not in args.skip:
        performer_size = tuple(args.size) if args.size else ((512, 8, 8) if cuda else (128, 2, 2))
        uncached = min(args.uncached_tokens or tokens, tokens)
        summary["performer_decoder"] = compare_performer(device, tokens, uncached, performer_size)
    if cuda and "ukb" not in args.skip:
        summary["ukb_bf16"] = ukb_brains_per_hour(device, args.ukb_batches, torch.bfloat16)
    summary["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
