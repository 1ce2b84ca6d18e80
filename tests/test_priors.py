"""Priors: token layout, causality, the lean export equals the x-transformers forward, performer on CPU."""

from __future__ import annotations

import pytest
import torch

from brainsynth.core.errors import RecipeError
from brainsynth.core.plugins import registry
from brainsynth.core.prior import teacher_forcing_inputs
from brainsynth.plugins.conditioning.bos_replacement import BosReplacement
from brainsynth.plugins.conditioning.cross_attend import CrossAttend
from brainsynth.plugins.conditioning.prepend import Prepend
from brainsynth.plugins.orderings.hilbert_curve import HilbertCurve
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.transformers.performer import PerformerPrior
from brainsynth.plugins.transformers.spatial_bias import SpatialRelativeBias, bucket_offsets, relative_position_ids
from brainsynth.plugins.transformers.xtransformer import XTransformerPrior

GRID = (3, 4, 5)
V = 17  # 16 codes + BOS
VARIABLES = [{"column": "age"}, {"column": "sex", "kind": "categorical"}]
LEVELS = {"sex": 2}


def _values(batch: int = 2) -> dict[str, torch.Tensor]:
    return {"age": torch.linspace(0.2, 0.8, batch), "sex": torch.arange(batch) % 2}


def _conditioning(kind: str | None, model_dim: int = 32):
    if kind == "context":
        return CrossAttend(VARIABLES, dim=12, model_dim=model_dim, num_levels=LEVELS)
    if kind == "prepend":
        return Prepend(VARIABLES, model_dim=model_dim, num_levels=LEVELS)
    if kind == "bos":
        return BosReplacement(VARIABLES, model_dim=model_dim, num_levels=LEVELS)
    return None


def _xtransformer(kind: str | None = "context", seed: int = 0, **options) -> XTransformerPrior:
    torch.manual_seed(seed)
    prior = XTransformerPrior(
        dim=32, depth=2, heads=2, attn_dim_head=16, num_tokens=V, ordering=HilbertCurve(spatial_shape=GRID),
        conditioning=_conditioning(kind), **options,
    )
    with torch.no_grad():  # move every weight off its initial value (unit-offset gains start at 0)
        for p in prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return prior.eval()


def _tokens(batch: int = 2, length: int = 60, seed: int = 0) -> torch.Tensor:
    tokens = torch.randint(0, V - 1, (batch, length), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = V - 1
    return tokens


EXPORT_CASES = {
    "plain": ("context", {}),
    "all_options": ("context", dict(
        use_rmsnorm=True, attn_gate_values=True, ff_glu=True, attn_qk_norm=True, sandwich_norm=True, tie_embedding=True,
        spatial_rel_pos_bias=True, spatial_pos_emb=True, use_abs_pos_emb=True, rotary_emb_dim=8)),
    "prepend_bias": ("prepend", dict(spatial_rel_pos_bias=True, attn_flash=False)),
    "bos_absolute": ("bos", dict(rotary_pos_emb=False, use_abs_pos_emb=True, ff_mult=2)),
    "unconditioned_bucketed": (None, dict(spatial_rel_pos_bias=True, spatial_bias_max_distance=2, attn_qk_norm=True)),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_cached_steps_reproduce_the_x_transformers_forward(case):
    kind, options = EXPORT_CASES[case]
    prior = _xtransformer(kind, **options)
    tokens, values = _tokens(), (_values() if kind else None)
    with torch.no_grad():
        full = prior(tokens, values)
        decoder = prior.decoder(2, values)
        stepped = torch.stack([decoder.start()] + [decoder.step(tokens[:, i]) for i in range(1, tokens.shape[1])], dim=1)
    assert full.shape == (2, 60, V)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("build", ["xtransformer_prepend_bias", "performer_local"])
def test_position_p_sees_only_inputs_up_to_p(build):
    if build == "performer_local":
        torch.manual_seed(0)
        prior = PerformerPrior(dim=32, depth=1, heads=2, dim_head=16, local_attn_heads=1, local_window_size=8,
                               num_tokens=V, ordering=RasterScan(spatial_shape=GRID), conditioning=None).eval()
        values = None
    else:
        prior, values = _xtransformer("prepend", spatial_rel_pos_bias=True), _values()
    tokens = _tokens()
    changed = tokens.clone()
    changed[:, 30] = (changed[:, 30] + 1) % (V - 1)
    with torch.no_grad():
        before, after = prior(tokens, values), prior(changed, values)
    torch.testing.assert_close(before[:, :30], after[:, :30], rtol=1e-5, atol=1e-5)
    assert (before[:, 30:] - after[:, 30:]).abs().max() > 1e-4


def test_teacher_forcing_inputs_shift_targets_behind_bos():
    targets = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    inputs = teacher_forcing_inputs(targets, bos=16)
    assert inputs.tolist() == [[16, 3, 1, 4], [16, 5, 9, 2]]


def test_vocabulary_and_sequence_come_from_the_engine():
    prior = registry().build(
        "transformer", {"name": "xtransformer", "dim": 32, "depth": 1, "heads": 2, "attn_dim_head": 16},
        num_tokens=V, max_seq_len=60, ordering=RasterScan(spatial_shape=GRID), conditioning=None,
    )
    assert (prior.num_tokens, prior.bos_token, prior.sequence_length) == (V, V - 1, 60)
    assert {"num_tokens", "ordering", "conditioning", "max_seq_len"}.isdisjoint(
        registry().get("transformer", "xtransformer").schema.parameters
    )
    with pytest.raises(RecipeError, match="max_seq_len 61 disagrees"):
        XTransformerPrior(dim=32, depth=1, num_tokens=V, max_seq_len=61, ordering=RasterScan(spatial_shape=GRID))
    with pytest.raises(RecipeError, match="need the ordering"):
        XTransformerPrior(dim=32, depth=1, num_tokens=V, max_seq_len=60, spatial_rel_pos_bias=True)


def test_spatial_bias_ids_follow_grid_offsets():
    coordinates = RasterScan(rot90_axes=[(0, 1)], spatial_shape=(2, 3, 4)).coordinates()
    ids, count = relative_position_ids(coordinates, prefix=2, max_distance=None)
    assert ids.shape == (26, 26) and count == 3 * 5 * 7 + 1
    assert (ids[:2] == count - 1).all() and (ids[:, :2] == count - 1).all()
    offsets = coordinates[:, None, :] - coordinates[None, :, :]
    grid_ids = ids[2:, 2:]
    for p, q, r, s in [(0, 5, 7, 12), (3, 3, 10, 10), (1, 9, 9, 17)]:
        same_offset = torch.equal(offsets[p, q], offsets[r, s])
        assert (grid_ids[p, q] == grid_ids[r, s]) == same_offset
    assert len(torch.unique(grid_ids)) == len(torch.unique(offsets.reshape(-1, 3), dim=0))
    bucketed = bucket_offsets(torch.arange(-40, 41), 8)
    assert bucketed.abs().max() == 8 and torch.equal(bucketed[36:45], torch.arange(-4, 5))
    assert (bucketed.diff() >= 0).all()


def test_spatial_bias_changes_the_logits_and_is_shared_by_all_layers():
    prior = _xtransformer(None, spatial_rel_pos_bias=True)
    assert sum(isinstance(m, SpatialRelativeBias) for m in prior.modules()) == 1
    tokens = _tokens()
    with torch.no_grad():
        before = prior(tokens)
        prior.spatial_bias.table.weight.zero_()
        after = prior(tokens)
    assert (before - after).abs().max() > 1e-3


def test_cross_attention_context_may_be_narrower_than_the_model():
    prior = _xtransformer("context")
    assert prior.conditioning.dim == 12
    with torch.no_grad():
        assert prior(_tokens(), _values()).shape == (2, 60, V)


def test_performer_builds_trains_and_runs_on_cpu():
    torch.manual_seed(0)
    prior = registry().build(
        "transformer",
        {"name": "performer", "dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "local_attn_heads": 1,
         "local_window_size": 8, "spatial_pos_emb": True},
        num_tokens=V, max_seq_len=60, ordering=HilbertCurve(spatial_shape=GRID),
        conditioning=CrossAttend(VARIABLES, model_dim=32, num_levels=LEVELS),
    )
    logits = prior(_tokens(), _values())
    assert logits.shape == (2, 60, V)
    logits.logsumexp(-1).mean().backward()
    assert prior.inputs.token_embedding.weight.grad.abs().sum() > 0


def test_performer_rejects_what_it_cannot_honour():
    grid = RasterScan(spatial_shape=GRID)
    with pytest.raises(RecipeError, match="spatial_rel_pos_bias"):
        PerformerPrior(dim=32, depth=1, spatial_rel_pos_bias=True, num_tokens=V, ordering=grid)
    with pytest.raises(RecipeError, match="context as wide as the model"):
        PerformerPrior(dim=32, depth=1, num_tokens=V, ordering=grid, conditioning=_conditioning("context"))
    with pytest.raises(RecipeError, match="local_attn_heads"):
        PerformerPrior(dim=32, depth=1, heads=2, local_attn_heads=3, num_tokens=V, ordering=grid)
    with pytest.raises(RecipeError, match="model\\s+width"):
        XTransformerPrior(dim=32, depth=1, num_tokens=V, ordering=grid, conditioning=Prepend(VARIABLES, model_dim=16, num_levels=LEVELS))
