"""A prior declares whether it has a cached decoder; sampling without one says so once, with the cost."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from brainsynth import cli
from brainsynth.core import plugins
from brainsynth.core.errors import BrainsynthWarning
from brainsynth.core.prior import Prior
from brainsynth.core.sampling import RecomputingDecoder, sample, uncached_cost


class Bigram(Prior):
    """Predicts the next token from the current one; no decoder of its own."""

    def __init__(self, num_tokens: int = 6, max_seq_len: int = 9) -> None:
        super().__init__()
        self.num_tokens, self.sequence_length, self.conditioning = num_tokens, max_seq_len, None
        self.embedding = nn.Embedding(num_tokens, 4)
        self.head = nn.Linear(4, num_tokens)

    def forward(self, tokens, conditioning=None):
        return self.head(self.embedding(tokens))


class BigramStep:
    """One embedding lookup per token: the whole state is the last token."""

    def __init__(self, prior: Bigram, batch_size: int) -> None:
        self.prior = prior
        self.last = torch.full((batch_size,), prior.bos_token)

    def start(self):
        return self.step(self.last)

    def step(self, tokens):
        return self.prior.head(self.prior.embedding(tokens))


class CachedBigram(Bigram):
    has_cached_decoder = True

    def decoder(self, batch_size, conditioning=None):
        return BigramStep(self, batch_size)


class ClaimsACache(Bigram):
    has_cached_decoder = True  # but keeps the recomputing default decoder


def slow_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BrainsynthWarning)]


def test_uncached_cost_is_the_ratio_of_positions_computed():
    assert uncached_cost(9) == "45 positions computed for 9 tokens instead of 9 (about 5x as many as a cached decoder computes)"
    assert "980,700 positions computed for 1,400 tokens" in uncached_cost(1400)  # the paper's 10x14x10 grid


def test_a_prior_without_a_cached_decoder_warns_once_with_the_cost():
    torch.manual_seed(0)
    prior = Bigram()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = sample(prior, 2, generator=torch.Generator().manual_seed(1))
        sample(prior, 2)  # the next batch of the same run: no second warning
    said = slow_warnings(record)
    assert said == [
        "Bigram has no cached decoder (Prior.has_cached_decoder is False): sampling re-runs the network on the "
        "whole prefix for every token, 45 positions computed for 9 tokens instead of 9 (about 5x as many as a "
        "cached decoder computes)."
    ]
    assert record[0].filename == __file__  # attributed to the caller of sample()
    cached = CachedBigram()
    cached.load_state_dict(prior.state_dict())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert torch.equal(sample(cached, 2, generator=torch.Generator().manual_seed(1)), first)  # same draws, faster
        sample(prior, 2, use_cache=False)  # asked for the slow path: not warned
        sample(Bigram(), 1, length=1)  # a single token costs the same either way
    assert slow_warnings(record) == []


def test_a_declared_cache_that_recomputes_is_named():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sample(ClaimsACache(), 1)
    (said,) = slow_warnings(record)
    assert said.startswith("ClaimsACache declares has_cached_decoder but its decoder() re-runs the whole prefix: ")
    assert isinstance(ClaimsACache().decoder(1), RecomputingDecoder)


def test_every_installed_prior_that_declares_a_cache_brings_a_decoder():
    registry = plugins.registry()
    declared = []
    for name in registry.names("prior"):
        factory = registry.get("prior", name).factory
        if isinstance(factory, type) and getattr(factory, "has_cached_decoder", False):
            declared.append(name)
            assert factory.decoder is not Prior.decoder, name
    assert {"xtransformer", "original_xtransformer"} <= set(declared)


def test_performer_declares_its_cache_per_instance():
    from brainsynth.plugins.transformers.performer import PerformerPrior

    options = dict(dim=8, depth=1, heads=2, num_tokens=9, max_seq_len=6)
    assert PerformerPrior(**options).has_cached_decoder
    assert not PerformerPrior(**options, sampling_decoder="recompute").has_cached_decoder


def test_the_cli_prints_a_brainsynth_warning_as_one_line():
    cli._one_line_warnings()
    assert warnings.formatwarning("slow", BrainsynthWarning, "x.py", 3) == "warning: slow\n"
    assert warnings.formatwarning("other", UserWarning, "x.py", 3).startswith("x.py:3: UserWarning: other")
