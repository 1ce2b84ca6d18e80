"""Classifier-free guidance: conditioning dropout with learned nulls, partial and unconditional
conditioning, guided sampling in one batched (cached) step, and the recipe side end to end."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from test_transformer_task import TOKENIZER  # the same tiny tokenizer run

from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.prior import null_values
from brainsynth.core.sampling import GuidedDecoder, sample
from brainsynth.plugins.conditioning.bos_replacement import BosReplacement
from brainsynth.plugins.conditioning.cross_attend import CrossAttend
from brainsynth.plugins.conditioning.prepend import Prepend
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.transformers.original_xtransformer import OriginalXTransformerPrior
from brainsynth.plugins.transformers.performer import PerformerPrior
from brainsynth.plugins.transformers.xtransformer import XTransformerPrior

GRID = (3, 4, 5)
V = 17
VARIABLES = [{"column": "age"}, {"column": "sex", "kind": "categorical"}, {"column": "volume"}]
LEVELS = {"sex": 2}


def _values(batch: int = 3) -> dict[str, torch.Tensor]:
    return {
        "age": torch.linspace(0.1, 0.9, batch),
        "sex": torch.arange(batch) % 2,
        "volume": torch.linspace(0.8, 0.2, batch),
    }


def _perturbed(prior: torch.nn.Module) -> torch.nn.Module:
    """A peaked, input-dependent model, so that greedy paths and guidance are not trivial."""
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


def _xtransformer(placement: str = "context", dropout: float = 0.2, **options) -> XTransformerPrior:
    torch.manual_seed(0)
    cls = {"context": CrossAttend, "prepend": Prepend, "bos": BosReplacement}[placement]
    conditioning = cls(VARIABLES, model_dim=32, num_levels=LEVELS, dropout=dropout)
    prior = XTransformerPrior(
        dim=32, depth=2, heads=2, attn_dim_head=16, num_tokens=V, ordering=RasterScan(spatial_shape=GRID),
        conditioning=conditioning, **options,
    )
    return _perturbed(prior)


def _performer(dropout: float = 0.2) -> PerformerPrior:
    torch.manual_seed(0)
    conditioning = CrossAttend(VARIABLES, model_dim=32, num_levels=LEVELS, dropout=dropout)
    prior = PerformerPrior(
        dim=32, depth=1, heads=2, dim_head=16, num_tokens=V, ordering=RasterScan(spatial_shape=GRID),
        conditioning=conditioning,
    )
    return _perturbed(prior)


def _original(dropout: float = 0.2) -> OriginalXTransformerPrior:
    torch.manual_seed(0)
    conditioning = CrossAttend(VARIABLES, model_dim=32, num_levels=LEVELS, dropout=dropout)
    prior = OriginalXTransformerPrior(
        dim=32, depth=2, heads=2, num_tokens=V, ordering=RasterScan(spatial_shape=GRID), conditioning=conditioning,
    )
    return _perturbed(prior)


# ------------------------------------------------------------------------------------------------
# dropout and null vectors
def test_null_vectors_exist_only_with_dropout_and_keep_older_state_dict_keys():
    torch.manual_seed(0)
    plain = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS)
    torch.manual_seed(0)
    dropped = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS, dropout=0.1)
    assert not plain.has_nulls and dropped.has_nulls
    assert set(dropped.state_dict()) - set(plain.state_dict()) == {"embed.null"}
    assert dropped.embed.null.shape == (3, 8)
    for key, value in plain.state_dict().items():  # nulls are created last: the same seed, the same embedders
        assert torch.equal(dropped.state_dict()[key], value), key
    with pytest.raises(RecipeError, match=r"conditioning.dropout must be in \[0, 1\)"):
        Prepend(VARIABLES, model_dim=8, num_levels=LEVELS, dropout=1.0)
    with pytest.raises(RecipeError, match="dropout_mode must be 'each' or 'all'"):
        Prepend(VARIABLES, model_dim=8, num_levels=LEVELS, dropout=0.1, dropout_mode="some")


@pytest.mark.parametrize("mode", ["each", "all"])
def test_dropout_replaces_vectors_by_the_null_at_the_rate_and_only_in_training(mode):
    module = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS, dropout=0.3, dropout_mode=mode)
    values = _values(4000)
    module.train()
    torch.manual_seed(5)
    out = module(values)
    is_null = (out == module.embed.null[None]).all(dim=-1)  # [B, 3]
    rate = is_null.float().mean().item()
    assert abs(rate - 0.3) < 0.03, rate
    rows = is_null.sum(dim=1)
    if mode == "all":  # all variables of a subject at once
        assert set(rows.tolist()) == {0, 3}
    else:  # independently: every count 0..3 occurs, near the binomial shares
        assert abs((rows == 1).float().mean().item() - 3 * 0.3 * 0.7**2) < 0.03
        assert abs((rows == 3).float().mean().item() - 0.3**3) < 0.01
    torch.manual_seed(5)
    assert torch.equal(module(values), out)  # torch's RNG: a resumed run draws the same masks
    module.eval()
    assert not (module(values) == module.embed.null[None]).all(dim=-1).any()
    # gradients reach the nulls in training
    module.train()
    module(values).square().sum().backward()
    assert module.embed.null.grad is not None and module.embed.null.grad.abs().sum() > 0


def test_partial_values_and_nan_rows_take_the_null_vectors():
    module = Prepend(VARIABLES, model_dim=8, num_levels=LEVELS, dropout=0.2).eval()
    full = module(_values())
    partial = module({"age": _values()["age"]})
    assert torch.equal(partial[:, 0], full[:, 0])
    assert torch.equal(partial[:, 1:], module.embed.null[1:].expand(3, 2, 8))
    mixed = module({**_values(), "sex": torch.tensor([0.0, float("nan"), 0.0])})
    assert torch.equal(mixed[[0, 2]], full[[0, 2]]) and torch.equal(mixed[1, 1], module.embed.null[1])
    unconditional = module(null_values(module.columns, 2))
    assert torch.equal(unconditional, module.embed.null.expand(2, 3, 8))
    with pytest.raises(DataError, match="no conditioning value given"):
        module({})


def test_a_prior_without_nulls_refuses_partial_values_in_one_line():
    module = CrossAttend(VARIABLES, model_dim=8, num_levels=LEVELS)
    with pytest.raises(DataError, match="'sex' is missing.*trained without conditioning.dropout") as error:
        module({"age": torch.rand(2), "volume": torch.rand(2)})
    assert "\n" not in str(error.value)
    prior = _xtransformer(dropout=0.0)
    with pytest.raises(DataError, match="trained without conditioning.dropout"):
        sample(prior, 2, None, length=4)


# ------------------------------------------------------------------------------------------------
# guided sampling
def test_scale_zero_is_the_unconditioned_model_and_scale_one_the_conditional():
    prior = _xtransformer(spatial_rel_pos_bias=True)
    values = _values()

    def draw(**options):
        return sample(prior, 3, generator=torch.Generator().manual_seed(1), **options)

    assert torch.equal(draw(conditioning=values, guidance_scale=0.0), draw(conditioning=None))
    assert torch.equal(draw(conditioning=values, guidance_scale=1.0), draw(conditioning=values))
    assert not torch.equal(draw(conditioning=values), draw(conditioning=None))  # the nulls are another model

    # the batched 2B-row combination itself: scale 0 gives the null branch's logits, step by step
    tokens = draw(conditioning=values)
    doubled = {k: torch.cat([v.double(), torch.full((3,), float("nan"), dtype=torch.float64)]) for k, v in values.items()}
    with torch.inference_mode():
        prior.eval()
        for scale in (0.0, 1.0, 2.5):
            guided = GuidedDecoder(prior.decoder(6, doubled), scale)
            conditional, null = prior.decoder(3, values), prior.decoder(3, null_values(prior.conditioning.columns, 3))
            pairs = [(guided.start(), conditional.start(), null.start())]
            for i in range(5):
                pairs.append((guided.step(tokens[:, i]), conditional.step(tokens[:, i]), null.step(tokens[:, i])))
            for g, c, n in pairs:
                torch.testing.assert_close(g, n + scale * (c - n), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _xtransformer("context", spatial_rel_pos_bias=True, attn_gate_values=True),
        lambda: _xtransformer("prepend", use_abs_pos_emb=True),
        lambda: _xtransformer("bos"),
        _performer,  # one FAVOR+ layer: its recurrent decoder equals the full forward (see test_original_performer)
        _original,
    ],
    ids=["xtransformer_context", "xtransformer_prepend", "xtransformer_bos", "performer_one_layer", "original_xtransformer"],
)
def test_guided_greedy_tokens_are_the_same_with_the_cache_and_the_full_forward(build):
    prior = build()
    values = _values()
    for conditioning in (values, {"age": values["age"]}):  # all variables, and only age
        cached = sample(prior, 3, conditioning, greedy=True, guidance_scale=3.0)
        full = sample(prior, 3, conditioning, greedy=True, guidance_scale=3.0, use_cache=False)
        assert torch.equal(cached, full)
        assert len(torch.unique(cached)) > 1  # not one repeated token
    assert not torch.equal(sample(prior, 3, values, greedy=True, guidance_scale=3.0), sample(prior, 3, values, greedy=True))


def test_guiding_some_variables_nulls_only_them_in_the_second_branch():
    """guided_variables: the second branch keeps the other variables' values, so guidance
    strengthens only the named ones; naming all of them is plain guidance."""
    prior = _xtransformer(spatial_rel_pos_bias=True)
    values = _values()
    tokens = sample(prior, 3, values, generator=torch.Generator().manual_seed(1))
    kept = {k: (v.double() if k != "volume" else torch.full((3,), float("nan"), dtype=torch.float64)) for k, v in values.items()}
    doubled = {k: torch.cat([v.double(), kept[k]]) for k, v in values.items()}
    with torch.inference_mode():
        prior.eval()
        guided = GuidedDecoder(prior.decoder(6, doubled), 2.0)
        conditional, partial = prior.decoder(3, values), prior.decoder(3, kept)
        pairs = [(guided.start(), conditional.start(), partial.start())]
        for i in range(5):
            pairs.append((guided.step(tokens[:, i]), conditional.step(tokens[:, i]), partial.step(tokens[:, i])))
    for g, c, n in pairs:
        torch.testing.assert_close(g, n + 2.0 * (c - n), rtol=1e-5, atol=1e-5)

    def draw(**options):
        return sample(prior, 3, values, guidance_scale=2.0, generator=torch.Generator().manual_seed(4), **options)

    assert torch.equal(draw(guided_variables=["age", "sex", "volume"]), draw())
    assert not torch.equal(draw(guided_variables=["volume"]), draw())
    with pytest.raises(RecipeError, match="'height': name variables the prior is conditioned on"):
        draw(guided_variables=["height"])


def test_sampling_options_apply_to_the_combined_logits():
    prior = _xtransformer()
    values = _values()
    greedy = sample(prior, 3, values, greedy=True, guidance_scale=2.0)
    top1 = sample(prior, 3, values, top_k=1, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, top1)
    a = sample(prior, 3, values, guidance_scale=2.0, temperature=0.7, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = sample(prior, 3, values, guidance_scale=2.0, temperature=0.7, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a < V - 1).all()


def test_partial_and_unconditional_sampling_and_refusals():
    prior = _xtransformer()
    only_age = sample(prior, 3, {"age": _values()["age"]}, greedy=True)
    unconditional = sample(prior, 3, None, greedy=True)
    assert only_age.shape == unconditional.shape == (3, 60) and not torch.equal(only_age, unconditional)
    assert torch.equal(sample(prior, 3, None, greedy=True, guidance_scale=4.0), unconditional)  # nothing to guide toward
    plain = _xtransformer(dropout=0.0)
    with pytest.raises(RecipeError, match="trained without conditioning.dropout") as error:
        sample(plain, 3, _values(), guidance_scale=2.0)
    assert "\n" not in str(error.value)
    unconditioned = XTransformerPrior(dim=16, depth=1, heads=2, attn_dim_head=8, num_tokens=V, ordering=RasterScan(spatial_shape=GRID))
    with pytest.raises(RecipeError, match="not conditioned"):
        sample(unconditioned, 2, guidance_scale=2.0, length=4)
    with pytest.raises(RecipeError, match="finite"):
        sample(prior, 3, _values(), guidance_scale=float("inf"))


# ------------------------------------------------------------------------------------------------
# the recipe side, end to end

PRIOR = """\
task: transformer
experiment: {{name: {name}, root: {root}}}
seed: 2
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
conditioning:
  name: cross_attend
  dropout: {dropout}
  variables:
    - {{column: ventricular_volume}}
    - {{column: age}}
    - {{column: sex, kind: categorical}}
network: {{name: xtransformer, dim: 32, depth: 1, heads: 2, attn_dim_head: 16}}
optimizer: {{lr: 0.003}}
train: {{epochs: 2, batch_size: 4, log_every: 1}}
sample: {{png: false, batch_size: 3}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cohort):  # noqa: F811
    from brainsynth import cli

    root = tmp_path_factory.mktemp("guidance")
    tokenizer = root / "tok.yaml"
    tokenizer.write_text(TOKENIZER.format(root=root / "runs", cohort=tiny_cohort))
    tokens = root / "runs" / "tok" / "tokens"
    recipes = {}
    for name, dropout in (("guided", 0.3), ("plain", 0.0)):
        recipes[name] = root / f"{name}.yaml"
        recipes[name].write_text(PRIOR.format(name=name, root=root / "runs", tokens=tokens, dropout=dropout))
    commands = [["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"],
                ["run", str(recipes["guided"])], ["run", str(recipes["plain"])]]
    for args in commands:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0, args
    return recipes, root / "runs"


def test_trained_with_dropout_samples_guided_partial_and_unconditional(runs, run_cli):
    recipes, root = runs
    state = torch.load(root / "guided" / "checkpoints" / "best.pt", weights_only=True)
    assert state["modules"]["network"]["conditioning.embed.null"].shape == (3, 32)
    plain = torch.load(root / "plain" / "checkpoints" / "best.pt", weights_only=True)
    assert not any("null" in key for key in plain["modules"]["network"])

    path = str(recipes["guided"])
    result = run_cli("run", path, "--mode", "sample", "--set", "sample.values=[{age: 60}, {age: 80, sex: 1}]",
                     "--set", "sample.guidance_scale=2", "--set", "sample.output=guided")
    assert result.code == 0, result
    folder = root / "guided" / "guided"
    rows = list(csv.DictReader(open(folder / "samples.csv")))
    assert [(r["age"], r["sex"], r["ventricular_volume"], r["given_variables"]) for r in rows] == [
        ("60", "", "", "age"), ("80", "1", "", "age;sex")]
    assert all((folder / r["file"]).is_file() for r in rows)
    assert json.loads((folder / "samples.json").read_text())["settings"]["guidance_scale"] == 2.0

    result = run_cli("run", path, "--mode", "sample", "--set", "sample.num_samples=2", "--set", "sample.output=free")
    assert result.code == 0, result
    rows = list(csv.DictReader(open(root / "guided" / "free" / "samples.csv")))
    assert [r["given_variables"] for r in rows] == ["none", "none"]

    result = run_cli("run", path, "--mode", "sample", "--set", "sample.fixed={age: 70}", "--set", "sample.output=fixed")
    assert result.code == 0, result
    rows = list(csv.DictReader(open(root / "guided" / "fixed" / "samples.csv")))
    assert [(r["age"], r["given_variables"]) for r in rows] == [("70", "age")]

    result = run_cli("run", path, "--mode", "sample", "--set", "sample.grid={age: [50, 80]}", "--set", "sample.fixed={sex: 0}",
                     "--set", "sample.guidance_scale=1.5", "--set", "sample.output=grid")
    assert result.code == 0, result
    rows = list(csv.DictReader(open(root / "guided" / "grid" / "samples.csv")))
    assert [(r["age"], r["sex"], r["given_variables"]) for r in rows] == [("50", "0", "age;sex"), ("80", "0", "age;sex")]

    result = run_cli("run", path, "--mode", "sample", "--set", "sample.values=[{agee: 60}]", "--set", "sample.output=typo")
    assert result.code == 2 and "unknown conditioning variable 'agee'" in result.err


def test_a_prior_trained_without_dropout_refuses_guidance_and_partial_values(runs, run_cli):
    recipes, root = runs
    path = str(recipes["plain"])
    result = run_cli("run", path, "--mode", "sample", "--set", "sample.split=val", "--set", "sample.guidance_scale=2")
    assert result.code == 2 and "trained without conditioning.dropout" in result.err and "guidance_scale" in result.err
    result = run_cli("run", path, "--mode", "sample", "--set", "sample.values=[{age: 60}]")
    assert result.code == 2 and "trained without conditioning.dropout" in result.err
    result = run_cli("run", path, "--mode", "sample")
    assert result.code == 2 and "cannot sample unconditionally" in result.err
    # a plain prior's samples.csv keeps its columns (no given_variables)
    result = run_cli("run", path, "--mode", "sample", "--set", "sample.values=[{age: 60, sex: 0, ventricular_volume: 20}]")
    assert result.code == 0, result
    header = next(csv.reader(open(root / "plain" / "samples" / "samples.csv")))
    assert header == ["sample", "file", "age", "sex", "ventricular_volume"]
