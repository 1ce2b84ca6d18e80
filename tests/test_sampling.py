"""The sampler: cached greedy decoding equals re-forward decoding; BOS is never drawn; filters."""

from __future__ import annotations

import pytest
import torch

from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.sampling import choose_tokens, filter_logits, sample, stack_conditioning
from brainsynth.plugins.conditioning.cross_attend import CrossAttend
from brainsynth.plugins.conditioning.prepend import Prepend
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.transformers.performer import PerformerPrior
from brainsynth.plugins.transformers.xtransformer import XTransformerPrior

GRID = (3, 4, 5)
V = 17
VARIABLES = [{"column": "age"}, {"column": "sex", "kind": "categorical"}]
LEVELS = {"sex": 2}


def _values(batch: int = 3) -> dict[str, torch.Tensor]:
    return {"age": torch.linspace(0.1, 0.9, batch), "sex": torch.arange(batch) % 2}


def _prior(placement: str = "context", **options) -> XTransformerPrior:
    torch.manual_seed(0)
    if placement == "context":
        conditioning = CrossAttend(VARIABLES, dim=12, model_dim=32, num_levels=LEVELS)
    else:
        conditioning = Prepend(VARIABLES, model_dim=32, num_levels=LEVELS)
    prior = XTransformerPrior(
        dim=32, depth=2, heads=2, attn_dim_head=16, num_tokens=V, ordering=RasterScan(spatial_shape=GRID),
        conditioning=conditioning, spatial_rel_pos_bias=True, **options,
    )
    with torch.no_grad():  # a peaked, input-dependent model, so greedy paths are not trivial
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


@pytest.mark.parametrize(
    "placement, options",
    [("context", dict(attn_gate_values=True, use_rmsnorm=True, ff_glu=True)), ("prepend", dict(attn_qk_norm=True, use_abs_pos_emb=True))],
)
def test_greedy_with_cache_equals_greedy_without(placement, options):
    prior = _prior(placement, **options)
    cached = sample(prior, conditioning=_values(), greedy=True)
    recomputed = sample(prior, conditioning=_values(), greedy=True, use_cache=False)
    assert cached.shape == (3, 60)
    assert torch.equal(cached, recomputed)
    assert len(torch.unique(cached)) > 3  # the path is not one repeated token
    assert not torch.equal(cached[0], cached[1])  # conditioning steers it


def test_bos_is_never_chosen_even_when_it_dominates():
    prior = _prior()
    with torch.no_grad():
        prior.to_logits.weight[prior.bos_token] = 50 * prior.to_logits.weight.abs().max()
        prior.to_logits.weight[prior.bos_token, ::2] *= -1
    tokens = sample(prior, conditioning=_values(), temperature=3.0, generator=torch.Generator().manual_seed(0))
    greedy = sample(prior, conditioning=_values(), greedy=True, length=20)
    assert (tokens != prior.bos_token).all() and (greedy != prior.bos_token).all()
    logits = torch.zeros(4, V)
    logits[:, V - 1] = 1e4
    assert (choose_tokens(logits, V - 1, top_k=1) != V - 1).all()
    assert (choose_tokens(logits, V - 1, greedy=True) != V - 1).all()


def test_sampling_is_batched_seeded_and_restores_training_mode():
    prior = _prior().train()
    threads = torch.get_num_threads()
    first = sample(prior, conditioning=_values(4), top_k=5, generator=torch.Generator().manual_seed(3), length=25)
    again = sample(prior, conditioning=_values(4), top_k=5, generator=torch.Generator().manual_seed(3), length=25)
    other = sample(prior, conditioning=_values(4), top_k=5, generator=torch.Generator().manual_seed(4), length=25)
    assert first.shape == (4, 25) and torch.equal(first, again) and not torch.equal(first, other)
    assert prior.training and torch.get_num_threads() == threads
    with pytest.raises(DataError, match="batch_size 2 differs"):
        sample(prior, 2, conditioning=_values(4))


def test_filters_keep_what_they_promise():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)
    shuffled = logits[:, [2, 0, 3, 1]]  # filtering follows values, not positions
    assert torch.isfinite(filter_logits(shuffled, top_p=0.7)).tolist() == [[False, True, False, True]]
    draws = torch.stack([choose_tokens(logits.clone(), bos=3, top_p=0.7) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}


def test_bad_sampling_options_are_recipe_errors():
    prior = _prior()
    for options, key in [({"temperature": 0.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p")]:
        with pytest.raises(RecipeError, match=f"sample.{key}"):
            sample(prior, conditioning=_values(), **options)


def test_the_performer_samples_through_either_decoder():
    torch.manual_seed(0)
    prior = PerformerPrior(dim=32, depth=1, heads=2, dim_head=16, num_tokens=V, ordering=RasterScan(spatial_shape=GRID))
    for use_cache in (True, False):  # recurrent state, and the generic re-run of the prefix
        tokens = sample(prior, 2, length=8, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
        assert tokens.shape == (2, 8) and (tokens < V - 1).all()


def test_stack_conditioning_builds_a_batch():
    batch = stack_conditioning([{"age": 0.5, "sex": 1}, {"age": 0.7, "sex": 0}])
    assert batch["age"].tolist() == pytest.approx([0.5, 0.7]) and batch["sex"].tolist() == [1, 0]
    with pytest.raises(DataError):
        stack_conditioning([{"age": 0.5}, {"sex": 1}])
