"""The recipe's precision: bf16 where the CPU has no native bf16 is named as slow, once, at start."""

from __future__ import annotations

import torch

from brainsynth.core import precision


def test_bf16_on_a_cpu_without_native_bf16_is_named_as_slow(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    message = precision.slow_precision("bf16", torch.device("cpu"))
    assert message is not None and "--set precision=fp32" in message


def test_bf16_on_a_cpu_with_native_bf16_and_other_precisions_say_nothing(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert precision.slow_precision("bf16", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert precision.slow_precision("fp32", torch.device("cpu")) is None
    assert precision.slow_precision("bf16", torch.device("cuda")) is None
