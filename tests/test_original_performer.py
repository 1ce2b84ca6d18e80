"""The original BrainSynth performer's checkpoints load into ours and give the original's outputs.

Golden files come from tools/original_golden/performer_golden.py, run against the original code
and its libraries (performer-pytorch 1.1.4, local-attention 1.11.2) in a separate environment.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _original_golden import golden_state, load_io, load_manifest, one_thread  # noqa: F401  (fixture)

from brainsynth.core.errors import CheckpointError
from brainsynth.core.sampling import RecomputingDecoder, sample
from brainsynth.plugins.conditioning.bos_replacement import BosReplacement
from brainsynth.plugins.conditioning.cross_attend import CrossAttend
from brainsynth.plugins.conditioning.none import NoConditioning
from brainsynth.plugins.conditioning.prepend import Prepend
from brainsynth.plugins.orderings.raster_scan import RasterScan
from brainsynth.plugins.transformers.performer import PerformerPrior

MANIFEST = load_manifest("performer")
CONFIGS = sorted(MANIFEST["configs"])
def ordering() -> RasterScan:
    options = {k: v for k, v in MANIFEST["ordering"].items() if k != "ordering_type"}
    assert MANIFEST["ordering"]["ordering_type"] == "raster_scan"
    return RasterScan(spatial_shape=tuple(MANIFEST["grid"]), **options)


ORDER = {"bos_replacement": "listed", "prepending": "last_first", "cross_attend": "last_first"}
"""The original prepends each vector (last variable first); its BOS replacement sums them in listed
order, which only ``listed`` reproduces to the bit (the sum is the same up to rounding)."""
_CONDITIONING = {"none": None, "bos_replacement": BosReplacement, "prepending": Prepend, "cross_attend": CrossAttend}


def recipe_network(options: dict) -> dict:
    """The `performer` recipe block for the original's run_transformer.py options (the import mapping)."""
    position = options["position_emb"]
    return dict(
        dim=options["n_embd"],
        depth=options["n_layers"],
        heads=options["n_head"],
        dim_head=options.get("dim_head", 64),
        local_attn_heads=options["local_attn_heads"],
        local_window_size=options["local_window_size"],
        feature_redraw_interval=options["feature_redraw_interval"],
        generalized_attention=options["generalized_attention"],
        use_scalenorm=options["use_scalenorm"],
        use_rezero=options["use_rezero"],
        tie_embedding=options["tie_embedding"],
        emb_dropout=options["emb_dropout"],
        ff_dropout=options["ff_dropout"],
        attn_dropout=options["attn_dropout"],
        position_emb=position if position in ("rotary", "fixed") else "absolute",
        spatial_pos_emb=options["spatial_position_emb"] or False,
        ff_glu=False,
        nb_features=None,
    )


def build(name: str, **extra) -> PerformerPrior:
    config = MANIFEST["configs"][name]
    kind = _CONDITIONING[config["conditioning_type"]]
    conditioning = NoConditioning()
    if kind is not None:
        variables = [
            {"column": v["column"], "kind": v["kind"], **({"normalize": "none"} if v["kind"] == "continuous" else {})}
            for v in config["variables"]
        ]
        levels = {v["column"]: v["levels"] for v in config["variables"] if v["kind"] == "categorical"}
        conditioning = kind(
            variables, continuous_embedding="tiled", order=ORDER[config["conditioning_type"]],
            model_dim=config["options"]["n_embd"], num_levels=levels,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PerformerPrior(
            **recipe_network(config["options"]),
            **extra,
            num_tokens=MANIFEST["vocab_size"] + 1,
            ordering=ordering(),
            conditioning=conditioning,
        )


def original_state(name: str) -> dict[str, torch.Tensor]:
    """The network's state dict from the golden file, in either of the original's two forms."""
    return golden_state(MANIFEST["configs"][name], trainer=True)


def values_of(name: str, io: dict) -> dict[str, torch.Tensor] | None:
    config = MANIFEST["configs"][name]
    if config["conditioning_type"] == "none" or not config["variables"]:
        return None
    return {v["column"]: c[:, 0] for v, c in zip(config["variables"], io["conditioning"])}


@pytest.fixture(scope="module")
def io() -> dict:
    return load_io(MANIFEST)


@pytest.fixture(scope="module")
def loaded() -> dict[str, PerformerPrior]:
    priors = {}
    for name in CONFIGS:
        prior = build(name)
        prior.load_original_state_dict(original_state(name))
        priors[name] = prior.eval()
    return priors


def test_golden_covers_both_checkpoint_forms_and_the_options():
    forms = {c["checkpoint_format"] for c in MANIFEST["configs"].values()}
    assert forms == {"state_dict", "ddp_trainer"}
    options = [c["options"] for c in MANIFEST["configs"].values()]
    for flag in ("generalized_attention", "use_scalenorm", "use_rezero", "tie_embedding"):
        assert any(o[flag] for o in options), flag
    assert {o["position_emb"] for o in options} == {"rotary", "fixed", "absolute"}
    assert {o["spatial_position_emb"] for o in options} == {None, "absolute", "fixed"}
    assert {c["conditioning_type"] for c in MANIFEST["configs"].values()} == set(_CONDITIONING)
    assert {o["local_attn_heads"] for o in options} >= {0, 1, 2}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_equal_the_originals(name, loaded, io):
    case = io[name]
    with torch.inference_mode():
        logits = loaded[name](case["inputs"], values_of(name, case))
    assert logits.shape == case["logits"].shape
    # 1e-5, not bit-equality: another CPU's kernels round differently from the goldens' machine.
    torch.testing.assert_close(logits, case["logits"], rtol=0, atol=1e-5)


def causal_consistent(name: str) -> bool:
    """Whether the original's re-run-the-prefix sampling is reproducible by a recurrent decoder.

    performer-pytorch's key features subtract the maximum projection over the whole input and
    then add eps, so in a stack of two or more layers with FAVOR+ heads the outputs of earlier
    positions (which feed later layers) shift a little whenever a new token raises that maximum.
    Re-running the prefix sees that; a recurrent state cannot. One layer, or local heads only,
    has no such path.
    """
    options = MANIFEST["configs"][name]["options"]
    return options["n_layers"] == 1 or options["local_attn_heads"] == options["n_head"]


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_samples_equal_the_originals(name, loaded, io):
    """The original's sampler re-ran the full forward per token; so does ours without the cache."""
    case = io[name]
    prior, values = loaded[name], values_of(name, case)
    batch = case["inputs"].shape[0]
    expected = case["greedy_sequence"]
    assert not (expected == MANIFEST["vocab_size"]).any()  # brainsynth masks BOS; the golden draws avoid it
    tokens = sample(prior, batch, values, greedy=True, use_cache=False)
    assert torch.equal(tokens, expected)
    if causal_consistent(name):
        tokens = sample(prior, batch, values, greedy=True, use_cache=True)
        assert torch.equal(tokens, expected)
    recompute = build(name, sampling_decoder="recompute")
    recompute.load_original_state_dict(original_state(name))
    assert isinstance(recompute.decoder(batch, values), RecomputingDecoder)
    assert torch.equal(sample(recompute, batch, values, greedy=True), expected)
    assert torch.equal(ordering().sequence_order, case["sequence_ordering"])
    assert torch.equal(ordering().revert(expected), case["greedy_grid"])


@pytest.mark.parametrize("name", [n for n in CONFIGS if causal_consistent(n)])
def test_recurrent_decoder_logits_follow_the_originals_sampler(name, loaded, io):
    """Per step, the recurrent decoder's logits are those of the full forward on the prefix."""
    case = io[name]
    prior, values = loaded[name], values_of(name, case)
    sequence = case["greedy_sequence"]
    batch = sequence.shape[0]
    with torch.inference_mode():
        fast, slow = prior.decoder(batch, values), RecomputingDecoder(prior, batch, values)
        worst = float((fast.start() - slow.start()).abs().max())
        for i in range(sequence.shape[1] - 1):
            worst = max(worst, float((fast.step(sequence[:, i]) - slow.step(sequence[:, i])).abs().max()))
    assert worst <= 1e-5


def test_projection_matrices_come_from_the_checkpoint_and_stay(loaded, io):
    name = "published"
    state = original_state(name)
    prior = loaded[name]
    ours = dict(prior.named_buffers())
    stored = {k: v for k, v in state.items() if k.endswith("projection_matrix")}
    ours.update({k: v for k, v in prior.state_dict(keep_vars=True).items() if k.endswith("projection_matrix")})
    assert stored
    for key, value in stored.items():
        assert torch.equal(ours["layers." + key.removeprefix("performer.")], value)
    assert any(".proj_updater.instance." in k for k in stored)  # the duplicate view is in the file too
    with torch.inference_mode():
        prior(io[name]["inputs"], values_of(name, io[name]))
    for key, value in stored.items():
        assert torch.equal(ours["layers." + key.removeprefix("performer.")], value)


def test_errors_name_the_key():
    name = "published"
    state = original_state(name)
    prior = build(name)
    extra = dict(state, **{"performer.net.layers.9.0.fn.to_q.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected key 'performer\.net\.layers\.9\.0\.fn\.to_q\.weight'"):
        prior.load_original_state_dict(extra)
    missing = {k: v for k, v in state.items() if k != "to_out.bias"}
    with pytest.raises(CheckpointError, match=r"missing key 'to_out\.bias'"):
        prior.load_original_state_dict(missing)
    shaped = dict(state, **{"token_emb.weight": torch.zeros(5, 3)})
    with pytest.raises(CheckpointError, match=r"'token_emb\.weight' has shape \(5, 3\)"):
        prior.load_original_state_dict(shaped)
    twins = dict(state)
    key = "performer.proj_updater.instance.layers.0.0.fn.to_q.weight"
    twins[key] = twins[key] + 1
    with pytest.raises(CheckpointError, match="differ"):
        prior.load_original_state_dict(twins)


def test_options_the_original_never_had_are_named():
    name = "published"
    config = MANIFEST["configs"][name]
    state = original_state(name)
    variables = [{"column": v["column"], "normalize": "none"} for v in config["variables"]]
    mlp = CrossAttend(variables, continuous_embedding="mlp", order="last_first", model_dim=config["options"]["n_embd"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = PerformerPrior(**recipe_network(config["options"]), num_tokens=MANIFEST["vocab_size"] + 1,
                               ordering=ordering(), conditioning=mlp)
    with pytest.raises(CheckpointError, match="continuous_embedding: tiled"):
        prior.load_original_state_dict(state)
    spatial = "none_spatial_absolute_scalenorm"
    options = dict(recipe_network(MANIFEST["configs"][spatial]["options"]), spatial_pos_emb=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = PerformerPrior(**options, num_tokens=MANIFEST["vocab_size"] + 1, ordering=ordering(),
                               conditioning=NoConditioning())
    with pytest.raises(CheckpointError, match="spatial_pos_emb: absolute or fixed"):
        prior.load_original_state_dict(original_state(spatial))


def test_another_ordering_is_refused():
    name = "none_spatial_absolute_scalenorm"
    state = original_state(name)
    config = MANIFEST["configs"][name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = PerformerPrior(
            **recipe_network(config["options"]),
            num_tokens=MANIFEST["vocab_size"] + 1,
            ordering=RasterScan(spatial_shape=tuple(MANIFEST["grid"])),
            conditioning=NoConditioning(),
        )
    with pytest.raises(CheckpointError, match="spatial_indices_sequence"):
        prior.load_original_state_dict(state)


# -- the recurrent decoder on brainsynth-built priors (library initialisation) ------------------
def small_prior(depth: int, conditioning_kind=None, **options) -> PerformerPrior:
    torch.manual_seed(3)
    conditioning = NoConditioning()
    if conditioning_kind is not None:
        conditioning = conditioning_kind(
            [{"column": "age"}, {"column": "site", "kind": "categorical"}], model_dim=16, num_levels={"site": 3}
        )
    settings = dict(dim=16, heads=2, dim_head=16, local_attn_heads=1, local_window_size=5, position_emb="rotary")
    settings.update(options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = PerformerPrior(**settings, depth=depth, num_tokens=MANIFEST["vocab_size"] + 1,
                               ordering=ordering(), conditioning=conditioning)
    return prior.eval()


CONDITION = {"age": torch.tensor([0.2, 0.9]), "site": torch.tensor([0, 2])}


def compare_decoders(prior: PerformerPrior, values) -> float:
    """Greedy-decode with the recurrent decoder, checking each step's logits against the full forward."""
    batch = 2
    with torch.inference_mode():
        fast, slow = prior.decoder(batch, values), RecomputingDecoder(prior, batch, values)
        a, b = fast.start(), slow.start()
        worst = float((a - b).abs().max())
        for _ in range(prior.sequence_length - 1):
            chosen_fast, chosen_slow = a[:, :-1].argmax(-1), b[:, :-1].argmax(-1)
            assert torch.equal(chosen_fast, chosen_slow)
            a, b = fast.step(chosen_fast), slow.step(chosen_slow)
            worst = max(worst, float((a - b).abs().max()))
    return worst


@pytest.mark.parametrize(
    "kind, options",
    [
        (CrossAttend, {}),
        (Prepend, {"position_emb": "absolute", "spatial_pos_emb": "absolute"}),
        (BosReplacement, {"use_scalenorm": True, "generalized_attention": True, "spatial_pos_emb": "fixed"}),
        (None, {"use_rezero": True, "local_attn_heads": 0, "position_emb": "fixed", "tie_embedding": True}),
    ],
)
def test_recurrent_decoder_matches_the_full_forward_one_layer(kind, options):
    assert compare_decoders(small_prior(1, kind, **options), CONDITION if kind else None) <= 1e-5


@pytest.fixture
def no_stabiliser_eps(monkeypatch):
    """performer-pytorch (and the decoder) without the eps terms that make its keys' features depend on
    the maximum over the whole input: the one thing a recurrent decoder cannot follow in deep stacks."""
    import performer_pytorch.performer_pytorch as library

    from brainsynth.plugins.transformers import performer_decoder

    kernel = library.softmax_kernel
    monkeypatch.setattr(library, "softmax_kernel", lambda *a, **k: kernel(*a, **{**k, "eps": 0.0}))
    monkeypatch.setattr(library.causal_linear_attention_noncuda, "__defaults__", (128, 0.0))
    monkeypatch.setattr(performer_decoder, "_KEY_EPS", 0.0)
    monkeypatch.setattr(performer_decoder, "_DENOMINATOR_EPS", 0.0)


@pytest.mark.parametrize("kind", [CrossAttend, Prepend])
def test_recurrent_decoder_matches_the_full_forward_deep_without_eps(no_stabiliser_eps, kind):
    assert compare_decoders(small_prior(2, kind), CONDITION) <= 1e-5


def test_deep_stacks_differ_only_by_the_stabiliser_look_ahead():
    """With the library's eps, a 2-layer stack's re-run prefix sees later keys' maximum; the gap is small."""
    prior = small_prior(2, CrossAttend)
    with torch.inference_mode():
        fast, slow = prior.decoder(2, CONDITION), RecomputingDecoder(prior, 2, CONDITION)
        gaps = [float((fast.start() - slow.start()).abs().max())]
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, MANIFEST["vocab_size"], (2, prior.sequence_length - 1), generator=generator)
        for i in range(tokens.shape[1]):
            gaps.append(float((fast.step(tokens[:, i]) - slow.step(tokens[:, i])).abs().max()))
    assert 0 < max(gaps) < 1e-2


def test_recurrent_decoder_under_bf16_autocast():
    prior = small_prior(2, CrossAttend)
    with torch.inference_mode():
        reference = prior.decoder(2, CONDITION)
        expected = [reference.start()] + [reference.step(torch.full((2,), i % 7)) for i in range(10)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decoder = prior.decoder(2, CONDITION)
            got = [decoder.start()] + [decoder.step(torch.full((2,), i % 7)) for i in range(10)]
    for a, b in zip(got, expected):
        assert torch.isfinite(a).all()
        assert float((a.float() - b).abs().max()) < 0.1 * float(b.abs().max())
    with pytest.raises(RuntimeError, match="full"):
        full = prior.decoder(2, CONDITION)
        with torch.inference_mode():
            full.start()
            for _ in range(prior.sequence_length):
                full.step(torch.zeros(2, dtype=torch.long))
