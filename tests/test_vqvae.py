"""baseline_vqvae: the paper's size, the original's parameter names, shapes, gradients, errors."""

from __future__ import annotations

import csv
import gc
import math
import weakref
from pathlib import Path

import pytest
import torch

import brainsynth

from brainsynth.core.errors import CheckpointError, DataError, RecipeError
from brainsynth.core.plugins import registry
from brainsynth.core.tokenizer import Tokenizer, TokenizerOutput
from brainsynth.plugins.codebooks.vanilla import VanillaCodebook
from brainsynth.plugins.tokenizers.baseline_vqvae import BaselineVQVAE
from brainsynth.plugins.tokenizers.blocks import SlimResidualLayer
from brainsynth.library.original_weights import convert_original_state_dict

MANIFEST = Path(__file__).parent / "data" / "original_vqvae_state_dict.tsv"
PAPER = {"codebook": {"name": "ema", "num_embeddings": 2048, "decay": 0.5, "commitment_cost": 0.25}}


def tiny(**overrides) -> BaselineVQVAE:
    torch.manual_seed(0)
    config = {"channels": 8, "levels": 2, "num_res_layers": 1, "embedding_dim": 4,
              "codebook": {"name": "ema", "num_embeddings": 16}}
    config.update(overrides)
    return brainsynth.build("tokenizer", {"name": "baseline_vqvae", **config})


def test_paper_configuration_has_the_original_parameter_count_without_allocating():
    with torch.device("meta"):
        model = brainsynth.build("tokenizer", {"name": "baseline_vqvae", **PAPER})
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 28_189_473
    assert model.token_grid((160, 224, 160)) == (10, 14, 10)
    assert model.output_shape((10, 14, 10)) == (160, 224, 160)


def test_parameter_names_map_one_to_one_onto_the_original_checkpoint():
    with open(MANIFEST, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    original = {row["key"]: torch.empty(tuple(int(s) for s in row["shape"].split("x")), device="meta") for row in rows}
    converted = convert_original_state_dict(original)
    with torch.device("meta"):
        ours = brainsynth.build("tokenizer", {"name": "baseline_vqvae", **PAPER}).state_dict()
    assert set(converted) == set(ours)
    assert all(converted[key].shape == ours[key].shape for key in ours)
    with pytest.raises(CheckpointError, match="quantizer.1.impl.N"):
        convert_original_state_dict({"quantizer.1.impl.N": torch.zeros(1)})


def test_forward_shapes_and_token_round_trip_3d_and_2d():
    model = tiny()
    x = torch.rand(2, 1, 16, 12, 8)
    out = model(x)
    assert isinstance(model, Tokenizer) and isinstance(out, TokenizerOutput)
    assert out.reconstruction.shape == x.shape
    assert out.tokens.shape == (2, 4, 3, 2) and out.tokens.dtype == torch.long
    assert model.token_grid((16, 12, 8)) == (4, 3, 2) and model.num_embeddings == 16
    assert 1.0 <= out.perplexity.item() <= 16 and 0 < out.code_usage.item() <= 1
    model.eval()
    tokens = model.encode_tokens(x)
    assert torch.equal(tokens, model.encode_tokens(x))
    assert model.decode_tokens(tokens).shape == x.shape

    flat = tiny(spatial_dims=2, in_channels=3, use_subpixel_conv=True, output_act="sigmoid")
    image = torch.rand(2, 3, 16, 20)
    out = flat(image)
    assert out.reconstruction.shape == image.shape and out.tokens.shape == (2, 4, 5)
    assert 0 <= out.reconstruction.min() and out.reconstruction.max() <= 1
    assert flat.last_layer_weight is flat.decoder[-2].conv_block.weight  # sub-pixel conv, before the sigmoid


def test_straight_through_gradients_reach_the_encoder_unchanged():
    model = tiny()
    x = torch.rand(1, 1, 16, 16, 16)
    z = model.encode(x)
    z.retain_grad()
    quantized = model.quantize(z).quantized
    quantized.retain_grad()
    model.decode(quantized).square().mean().backward()
    assert torch.equal(z.grad, quantized.grad)
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.codebook.embedding.weight.grad is None  # EMA codes are not trained by gradient


def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.rand(1, 1, 16, 16, 16)
    grads = []
    for checkpointing in (False, True):
        model = tiny(checkpointing=checkpointing, dropout=0.0)
        model(x).reconstruction.square().mean().backward()
        grads.append(model.encoder[2][0][0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])



def test_channels_last_computes_the_same_and_its_weights_load_into_the_usual_layout():
    x = torch.rand(1, 1, 16, 16, 16)
    outputs, grads, states = [], [], []
    for channels_last in (False, True):
        model = tiny(channels_last=channels_last)
        out = model(x)
        out.reconstruction.square().mean().backward()
        outputs.append(out)
        grads.append(model.encoder[2][0][0].weight.grad.clone())
        states.append(model.state_dict())
    assert model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert outputs[1].reconstruction.is_contiguous()  # the caller gets the usual layout back
    torch.testing.assert_close(outputs[0].reconstruction, outputs[1].reconstruction, rtol=1e-5, atol=1e-6)
    assert torch.equal(outputs[0].tokens, outputs[1].tokens)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    usual = tiny()
    usual.load_state_dict(states[1])
    with torch.no_grad():  # eval mode: the EMA codebook does not update
        torch.testing.assert_close(usual.eval()(x).reconstruction, model.eval()(x).reconstruction, rtol=1e-5, atol=1e-6)

def test_cheap_activations_are_recomputed_in_the_backward_pass_not_kept(monkeypatch):
    """Residual outputs and the first encoder stage's output are freed after the forward pass;
    the gradients are those of the plain graph (dropout included, same seed)."""
    merge = SlimResidualLayer.merge
    outputs: list[weakref.ref] = []

    def recording_merge(self, hidden, x):
        out = merge(self, hidden, x)
        outputs.append(weakref.ref(out))
        return out

    monkeypatch.setattr(SlimResidualLayer, "merge", recording_merge)
    x = torch.rand(1, 1, 16, 16, 16)
    grads, alive = [], []
    for recompute in (False, True):
        model = tiny(num_res_layers=2, dropout=0.2)
        model.recompute_cheap_activations = recompute
        model.encoder[1].register_forward_hook(lambda module, args, out: outputs.append(weakref.ref(out)))
        outputs.clear()
        torch.manual_seed(3)
        loss = model(x).reconstruction.square().mean()
        gc.collect()
        alive.append(sum(ref() is not None for ref in outputs))
        assert len(outputs) == 1 + 4 * 2  # first stage + (2 levels x 2 layers) in encoder and decoder
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert alive == [9, 0]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_residual_layers_mirror_the_original_layout():
    model = tiny(num_res_layers=2, dropout=0.1)
    layer = model.encoder[2][1]
    assert layer[0].kernel_size == (3, 3, 3) and layer[3].kernel_size == (1, 1, 1)
    assert isinstance(layer[2], torch.nn.Dropout3d)
    assert [type(m).__name__ for m in model.decoder] == [
        "Conv3d", "Sequential", "ConvTranspose3d", "ReLU", "Sequential", "ConvTranspose3d"]


def test_shapes_that_do_not_survive_the_levels_are_refused():
    model = tiny()
    assert model.check_spatial_shape((16, 12, 8)) == (4, 3, 2)
    with pytest.raises(DataError, match="does not survive encoding and decoding"):
        model.check_spatial_shape((30, 16, 16))
    model.eval()
    with pytest.raises(DataError, match="outside the codebook"):
        model.decode_tokens(torch.full((1, 2, 2, 2), 16))


def test_bad_settings_are_recipe_errors():
    with pytest.raises(RecipeError, match="downsample_parameters has 3 entries but levels is 2"):
        tiny(downsample_parameters=[(4, 2, 1, 1)] * 3)
    with pytest.raises(RecipeError, match="channels must be an even number"):
        tiny(channels=7)
    with pytest.raises(RecipeError, match="unknown key"):
        tiny(codebook={"name": "ema", "decay_rate": 0.5})


def test_registry_builds_the_tokenizer_with_its_nested_codebook_block():
    block = {"name": "baseline_vqvae", "channels": 8, "levels": 2, "num_res_layers": 1, "embedding_dim": 4,
             "codebook": {"name": "vanilla", "num_embeddings": 8}}
    model = registry().build("tokenizer", block)
    assert isinstance(model.codebook, VanillaCodebook)
    assert model.codebook.embedding.weight.shape == (8, 4) and model.embedding_dim == 4
    assert math.isclose(model.codebook.commitment_cost, 0.25)
