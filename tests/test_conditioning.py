"""Conditioning components: vectors per variable, placements, errors, and effect on the logits."""

from __future__ import annotations

import pytest
import torch

from brainsynth.core.data import Variable
from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.plugins import registry
from brainsynth.plugins.conditioning.bos_replacement import BosReplacement
from brainsynth.plugins.conditioning.cross_attend import CrossAttend
from brainsynth.plugins.conditioning.none import NoConditioning
from brainsynth.plugins.conditioning.prepend import Prepend
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.transformers.xtransformer import XTransformerPrior

VARIABLES = [{"column": "age"}, {"column": "sex", "kind": "categorical"}, {"column": "25004-2.0"}]
LEVELS = {"sex": 2}


def _values(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "age": torch.rand(batch, generator=g),
        "sex": torch.randint(0, 2, (batch,), generator=g),
        "25004-2.0": torch.rand(batch, generator=g),
    }


@pytest.mark.parametrize(
    "cls, options, vectors, width",
    [(BosReplacement, {}, 1, 16), (Prepend, {}, 3, 16), (CrossAttend, {}, 3, 16), (CrossAttend, {"dim": 5}, 3, 5)],
)
def test_placements_make_the_documented_shapes(cls, options, vectors, width):
    module = cls(VARIABLES, **options, model_dim=16, num_levels=LEVELS)
    out = module(_values())
    assert out.shape == (3, vectors, width) and module.num_vectors == vectors and module.dim == width


def test_tiled_continuous_copies_the_value_and_categorical_uses_its_level_row():
    module = Prepend(
        [Variable("age"), Variable("sex", kind="categorical")], continuous_embedding="tiled", model_dim=8, num_levels={"sex": 3}
    )
    values = {"age": torch.tensor([0.25, 0.75]), "sex": torch.tensor([2, 0])}
    out = module(values)
    assert torch.equal(out[:, 0], values["age"][:, None].expand(2, 8))
    table = module.embed.embedders[1].weight
    assert torch.equal(out[0, 1], table[2]) and torch.equal(out[1, 1], table[0])
    assert sum(p.numel() for p in module.embed.embedders[0].parameters()) == 0


def test_learned_continuous_embeddings_train():
    module = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS)
    module(_values()).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_value_errors_name_the_column():
    module = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS)
    values = _values()
    with pytest.raises(DataError, match="'25004-2.0' is missing"):
        module({k: v for k, v in values.items() if k != "25004-2.0"})
    with pytest.raises(DataError, match="'sex'.*outside 0..1"):
        module({**values, "sex": torch.tensor([0, 1, 2])})
    with pytest.raises(DataError, match="'age' is not finite"):
        module({**values, "age": torch.tensor([0.1, float("nan"), 0.2])})


def test_configuration_errors_are_recipe_errors():
    with pytest.raises(RecipeError, match="'sex' needs its number of levels"):
        CrossAttend(VARIABLES, model_dim=8, num_levels={})
    with pytest.raises(RecipeError, match="listed more than once"):
        Prepend([{"column": "age"}, {"column": "age"}], model_dim=8)
    with pytest.raises(RecipeError, match="unknown key"):
        Prepend([{"column": "age", "kindd": "continuous"}], model_dim=8)
    with pytest.raises(RecipeError, match="at least one variable"):
        BosReplacement([], model_dim=8)


def test_registry_injects_model_width_and_levels():
    component = registry().get("conditioning", "cross_attend")
    assert {"model_dim", "num_levels"}.isdisjoint(component.schema.parameters)
    built = registry().build("conditioning", {"name": "cross_attend", "variables": VARIABLES, "dim": 6}, model_dim=16, num_levels=LEVELS)
    assert built(_values()).shape == (3, 3, 6)
    assert registry().build("conditioning", {"name": "none"}).placement == "none"


def _prior(conditioning) -> XTransformerPrior:
    torch.manual_seed(0)
    return XTransformerPrior(
        dim=16, depth=1, heads=2, attn_dim_head=8, num_tokens=7, ordering=RasterScan(spatial_shape=(2, 3, 2)),
        conditioning=conditioning,
    ).eval()


@pytest.mark.parametrize("cls, options", [(BosReplacement, {}), (Prepend, {}), (CrossAttend, {"dim": 6})])
def test_conditioning_changes_the_logits(cls, options):
    prior = _prior(cls(VARIABLES, **options, model_dim=16, num_levels=LEVELS))
    tokens = torch.randint(0, 6, (3, 12))
    tokens[:, 0] = prior.bos_token
    with torch.no_grad():
        first, again = prior(tokens, _values(seed=1)), prior(tokens, _values(seed=1))
        other = prior(tokens, _values(seed=2))
    assert torch.equal(first, again)
    assert (first - other).abs().amax(dim=(1, 2)).min() > 1e-4  # every subject's logits move


def test_no_conditioning_ignores_values():
    prior = _prior(NoConditioning(VARIABLES))
    tokens = torch.full((3, 12), 1)
    tokens[:, 0] = prior.bos_token
    with torch.no_grad():
        assert torch.equal(prior(tokens, _values(seed=1)), prior(tokens, _values(seed=2)))
        assert torch.equal(prior(tokens), prior(tokens, _values(seed=2)))


def test_conditioned_prior_without_values_is_a_data_error():
    prior = _prior(CrossAttend(VARIABLES, model_dim=16, num_levels=LEVELS))
    with pytest.raises(DataError, match="conditioned on age, sex, 25004-2.0"):
        prior(torch.full((1, 4), prior.bos_token))


@pytest.mark.parametrize("cls", [Prepend, CrossAttend])
def test_last_first_order_reverses_the_vectors_as_the_original_built_its_context(cls):
    """The original prepended each new conditioning vector, so its last variable comes first."""
    torch.manual_seed(0)
    listed = cls(VARIABLES, model_dim=16, num_levels=LEVELS)
    reversed_ = cls(VARIABLES, order="last_first", model_dim=16, num_levels=LEVELS)
    reversed_.load_state_dict(listed.state_dict())

    assert torch.equal(reversed_(_values()), listed(_values()).flip(1))
    with pytest.raises(RecipeError, match="order must be"):
        cls(VARIABLES, order="backwards", model_dim=16, num_levels=LEVELS)
