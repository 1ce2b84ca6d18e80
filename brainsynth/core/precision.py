"""Mixed precision: the recipe's ``precision`` as an autocast context and a gradient scaler."""

from __future__ import annotations

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The autocast context for the recipe's ``precision`` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=_DTYPES.get(precision, torch.float32), enabled=precision in _DTYPES)


def slow_precision(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` would run slower than fp32 on this device, or None.

    bf16 on a CPU without native bf16 instructions (AVX512-BF16 or AMX) is emulated: a demo
    tokenizer step took 7.5x as long as in fp32 with oneDNN held to AVX2, where with AMX it took
    0.2x (benchmarks/precision.py).
    """
    if device.type != "cpu" or precision != "bf16":
        return None
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if native is None or native():
        return None
    return ("precision bf16 on a CPU without native bf16 instructions (AVX512-BF16/AMX) is emulated and "
            "several times slower than fp32; run with --set precision=fp32")


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that scales only under fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
