"""``original_xtransformer`` against the original BrainSynth XTransformer (x-transformers 0.25.4).

The golden files in tests/data/original_priors come from tools/original_golden/xtransformer_golden.py,
run on the original code with its own libraries: checkpoints with random values in every
parameter (gains, biases, gate biases, the spatial bias table), the original's eval-mode logits
for teacher-forced inputs, and its greedy samples. Each configuration is rebuilt here from its
recipe-style options, the checkpoint is loaded with `load_original_state_dict`, and the logits
must equal the original's to 1e-5 and the greedy samples must be identical. Logits are not
compared bit for bit: the goldens were made on one CPU, and another CPU's matmul kernels
(AVX-512 on AMD against Intel's, measured: 2.9e-6 apart) round differently.
"""

from __future__ import annotations

import math

import pytest
import torch
from _original_golden import DATA, golden_state, load_io, load_manifest, one_thread  # noqa: F401  (fixture)

from brainsynth.core import plugins
from brainsynth.core.errors import CheckpointError, RecipeError
from brainsynth.core.sampling import sample

MANIFEST = load_manifest("xtransformer")
CONFIGS = sorted(MANIFEST["configs"])
PLACEMENTS = {"cross_attend": "cross_attend", "prepending": "prepend", "bos_replacement": "bos_replacement", "none": "none"}


@pytest.fixture(scope="module")
def golden_io() -> dict:
    return load_io(MANIFEST)


def build(options: dict, conditioning_type: str, variables: list[dict], grid=None, vocab: int | None = None):
    """The prior as a recipe builds it: published ordering, tiled raw conditioning in the original's order."""
    registry = plugins.registry()
    grid = tuple(grid or MANIFEST["grid"])
    ordering_block = {"name": "raster_scan", **{k: v for k, v in MANIFEST["ordering"].items() if k != "ordering_type"}}
    ordering = registry.build("ordering", ordering_block, spatial_shape=grid)
    levels = {v["column"]: v["levels"] for v in variables if v["kind"] == "categorical"}
    block = {"name": PLACEMENTS[conditioning_type]}
    injected = {}
    if conditioning_type != "none":
        block.update(
            variables=[{"column": v["column"], "kind": v["kind"], "normalize": "none"} for v in variables],
            continuous_embedding="tiled",
            order="last_first",
        )
        injected = {"model_dim": options["dim"], "num_levels": levels}
    conditioning = registry.build("conditioning", block, **injected)
    vocab = MANIFEST["vocab_size"] if vocab is None else vocab
    network = {"name": "original_xtransformer", **options}
    return registry.build(
        "transformer", network, num_tokens=vocab + 1, ordering=ordering, conditioning=conditioning, max_seq_len=math.prod(grid)
    )


def values_of(config: dict, table: torch.Tensor) -> dict[str, torch.Tensor] | None:
    if config["conditioning_type"] == "none":
        return None
    return {v["column"]: table[:, k] for k, v in enumerate(config["variables"])}


def golden_prior(name: str):
    config = MANIFEST["configs"][name]
    prior = build(config["options"], config["conditioning_type"], config["variables"])
    prior.load_original_state_dict(golden_state(config))
    return prior.eval(), config


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_greedy_samples_equal_the_originals(name: str, golden_io: dict) -> None:
    prior, config = golden_prior(name)
    io = golden_io[name]
    values = values_of(config, io["conditioning"])
    with torch.no_grad():
        logits = prior(io["inputs"], values)
    assert logits.shape == io["logits"].shape
    torch.testing.assert_close(logits, io["logits"], rtol=0, atol=1e-5)
    tokens = sample(prior, io["inputs"].shape[0], values, greedy=True)
    grid = build_ordering().revert(tokens)
    assert torch.equal(grid, io["greedy_grid"])


def build_ordering():
    registry = plugins.registry()
    block = {"name": "raster_scan", **{k: v for k, v in MANIFEST["ordering"].items() if k != "ordering_type"}}
    return registry.build("ordering", block, spatial_shape=tuple(MANIFEST["grid"]))


def test_the_published_ordering_is_the_originals(golden_io: dict) -> None:
    assert torch.equal(build_ordering().sequence_order, golden_io["sequence_ordering"])


PUBLISHED = {
    "position_emb": "rotary",
    "use_rmsnorm": True,
    "attn_gate_values": True,
    "spatial_rel_pos_bias": True,
}
"""The published UKB options (ukb_transformer.sh); the others keep the original's defaults."""
CONTINUOUS = [{"column": f"c{i}", "kind": "continuous"} for i in range(4)]


def randomised(prior, seed: int = 0):
    """Random values in every parameter (gains near 1), so that the cache is checked on every weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in prior.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim == 1 and (name.endswith(".g") or name.endswith("weight")):
                parameter.copy_(1 + 0.2 * noise)
            elif parameter.ndim == 1:
                parameter.copy_(0.2 * noise)
            else:
                parameter.copy_(noise / max(parameter.shape[-1], 1) ** 0.5)
    return prior.eval()


def continuous_values(batch: int, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"c{i}": torch.randn(batch, generator=generator) for i in range(4)}


@pytest.mark.parametrize(
    "conditioning_type, extra",
    [
        ("cross_attend", {}),
        ("prepending", {"spatial_position_emb": "absolute"}),
        ("cross_attend", {"attn_talking_heads": True, "use_qk_norm_attn": True, "residual_attn": True,
                          "cross_residual_attn": True, "gate_residual": True, "attn_on_attn": True}),
        ("bos_replacement", {"use_rezero": True, "rel_pos_bias": True, "sandwich_coef": 1, "ff_glu": True}),
    ],
)
def test_cached_decoder_follows_the_full_forward(conditioning_type: str, extra: dict) -> None:
    """Every cached step's logits match the full forward's, and greedy tokens are the same."""
    options = {"dim": 32, "depth": 2, "heads": 2, **PUBLISHED, **extra}
    prior = randomised(build(options, conditioning_type, CONTINUOUS, grid=(3, 4, 5), vocab=24))
    values = continuous_values(3)
    cached = sample(prior, 3, values, greedy=True)
    full = sample(prior, 3, values, greedy=True, use_cache=False)
    assert torch.equal(cached, full)
    inputs = torch.cat([torch.full((3, 1), prior.bos_token), cached[:, :-1]], dim=1)
    with torch.no_grad():
        decoder = prior.decoder(3, values)
        stepped = torch.stack([decoder.start()] + [decoder.step(inputs[:, i]) for i in range(1, inputs.shape[1])], dim=1)
        teacher_forced = prior(inputs, values)
    # Different operation order (fused projections, rotation matrices, torch's rms_norm): float rounding only.
    assert float((stepped - teacher_forced).abs().max()) <= 1e-4 * float(teacher_forced.abs().max())


def test_new_models_compute_the_originals_buffers() -> None:
    """Spatial bias ids, spatial position tables and rotary frequencies equal the original's saved buffers."""
    for name in CONFIGS:
        config = MANIFEST["configs"][name]
        prior = build(config["options"], config["conditioning_type"], config["variables"])
        saved = golden_state(config)
        buffers = dict(prior.named_buffers())
        ours = {key: value for key, value in prior.state_dict().items() if key in buffers}  # persistent ones
        for key, value in ours.items():
            assert key in saved, (name, key)
            assert saved[key].dtype == value.dtype and torch.equal(saved[key], value), (name, key)
        assert set(prior.state_dict()) - set(saved) <= {k for k in prior.state_dict() if k.startswith("conditioning.")}


def test_state_dict_keys_are_the_originals() -> None:
    config = MANIFEST["configs"]["ukb"]
    prior = build(config["options"], config["conditioning_type"], config["variables"])
    assert sorted(prior.state_dict()) == sorted(golden_state(config))


def test_categorical_tables_load_from_the_originals_names(golden_io: dict) -> None:
    prior, _ = golden_prior("bos_replacement")
    checkpoint = torch.load(DATA / "xt_bos_replacement.pt", weights_only=True)["network"]
    table = prior.conditioning.embed.embedders[1].weight
    assert torch.equal(table, checkpoint["module.conditioning_emb.1.weight"])


def checkpoint_state(name: str) -> dict[str, torch.Tensor]:
    return golden_state(MANIFEST["configs"][name])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("attn_layers.layers.0.1.to_v_gate.bias"), "lacks 'attn_layers.layers.0.1.to_v_gate.bias'"),
        (lambda s: s.__setitem__("attn_layers.layers.9.1.to_q.weight", torch.zeros(1)), "'attn_layers.layers.9.1.to_q.weight' has no counterpart"),
        (lambda s: s.__setitem__("norm.weight", torch.zeros(5)), "'norm.weight' has shape (5,)"),
        (lambda s: s.__setitem__("attn_layers.rel_pos.rp_buckets", torch.zeros(3, 3, dtype=torch.int32)), "rp_buckets"),
    ],
)
def test_load_names_the_first_bad_key(change, message: str) -> None:
    config = MANIFEST["configs"]["ukb"]
    prior = build(config["options"], config["conditioning_type"], config["variables"])
    state = checkpoint_state("ukb")
    change(state)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prior.load_original_state_dict(state)


def test_a_checkpoint_with_other_options_is_refused() -> None:
    config = MANIFEST["configs"]["ukb"]
    prior = build({**config["options"], "attn_gate_values": False}, config["conditioning_type"], config["variables"])
    with pytest.raises(CheckpointError, match="to_v_gate"):
        prior.load_original_state_dict(checkpoint_state("ukb"))


def test_recipe_keys_are_the_original_flags() -> None:
    schema = plugins.registry().get("transformer", "original_xtransformer").schema
    names = set(schema.parameters)
    assert names == {
        "dim", "depth", "heads", "emb_dropout", "ff_dropout", "attn_dropout", "tie_embedding", "ff_glu", "use_rezero",
        "position_emb", "spatial_position_emb", "use_rmsnorm", "attn_talking_heads", "attn_gate_values", "attn_on_attn",
        "sandwich_coef", "sandwich_norm", "rel_pos_bias", "spatial_rel_pos_bias", "bucket_values", "spatial_bias_max_dist",
        "use_qk_norm_attn", "residual_attn", "cross_residual_attn", "gate_residual",
    }


@pytest.mark.parametrize(
    "options, conditioning_type, message",
    [
        ({"sandwich_coef": 3}, "cross_attend", "sandwich_coef must be in 1..depth"),
        ({"sandwich_norm": True, "residual_attn": True}, "cross_attend", "sandwich_norm cannot be combined"),
        ({"spatial_position_emb": "fixed", "dim": 5}, "none", "needs an even dim"),
        ({"position_emb": "learned"}, "none", "position_emb"),
    ],
)
def test_impossible_options_are_one_line_recipe_errors(options: dict, conditioning_type: str, message: str) -> None:
    variables = [] if conditioning_type == "none" else CONTINUOUS
    with pytest.raises(RecipeError, match=message) as raised:
        build({"dim": 8, "depth": 2, "heads": 1, **options}, conditioning_type, variables)
    assert "\n" not in str(raised.value)


def test_spatial_bias_needs_a_3d_grid() -> None:
    registry = plugins.registry()
    ordering = registry.build("ordering", {"name": "raster_scan"}, spatial_shape=(4, 5))
    with pytest.raises(RecipeError, match="3D token grid"):
        registry.build(
            "transformer", {"name": "original_xtransformer", "dim": 8, "depth": 1, "heads": 1, "spatial_rel_pos_bias": True},
            num_tokens=9, ordering=ordering, conditioning=None, max_seq_len=20,
        )


def test_trains_and_samples_in_bfloat16() -> None:
    """A training step reaches every parameter; sampling runs with bf16 weights and under bf16 autocast."""
    prior = build({"dim": 16, "depth": 2, "heads": 2, **PUBLISHED, "emb_dropout": 0.1, "attn_dropout": 0.1},
                  "cross_attend", CONTINUOUS, grid=(2, 3, 4), vocab=12)
    values = continuous_values(2)
    prior.train()
    tokens = torch.randint(0, 12, (2, 24))
    logits = prior(torch.cat([torch.full((2, 1), prior.bos_token), tokens[:, :-1]], dim=1), values)
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in prior.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        drawn = sample(prior, 2, values, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 24) and bool((drawn < 12).all())
    prior = prior.to(torch.bfloat16)
    drawn = sample(prior, 2, values, greedy=True)
    assert drawn.shape == (2, 24) and bool((drawn < 12).all())
