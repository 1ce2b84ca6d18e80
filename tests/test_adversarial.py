"""Adversarial criteria (named correctly), the PatchGAN, the warm-up and the adaptive weight under DDP."""

from __future__ import annotations

import pytest
import torch

import brainsynth
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from brainsynth.core.errors import RecipeError
from brainsynth.core.plugins import registry
from brainsynth.library.adversarial_weighting import adaptive_weight, last_layer_weight, unwrap
from brainsynth.library.linear_warmup import warmup_factor
from brainsynth.plugins.tokenizers.baseline_vqvae import BaselineVQVAE

LOGITS = torch.tensor([-2.0, 0.0, 0.5, 3.0])


def criterion(name: str):
    return registry().build("adversarial_loss", {"name": name})


def test_least_square_criterion():
    c = criterion("least_square")
    torch.testing.assert_close(c.discriminator_loss(LOGITS, LOGITS), 0.5 * ((LOGITS - 1) ** 2 + LOGITS**2).mean())
    torch.testing.assert_close(c.generator_loss(LOGITS), ((LOGITS - 1) ** 2).mean())


def test_hinge_is_the_hinge_loss():
    c = criterion("hinge")
    torch.testing.assert_close(c.real(LOGITS), torch.tensor([3.0, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(c.fake(LOGITS), torch.tensor([0.0, 1.0, 1.5, 4.0]))
    torch.testing.assert_close(c.generator_loss(LOGITS), -LOGITS.mean())


def test_non_saturating_is_binary_cross_entropy_on_logits():
    c = criterion("non_saturating")
    ones, zeros = torch.ones_like(LOGITS), torch.zeros_like(LOGITS)
    expected = 0.5 * (F.binary_cross_entropy_with_logits(LOGITS, ones) + F.binary_cross_entropy_with_logits(LOGITS, zeros))
    torch.testing.assert_close(c.discriminator_loss(LOGITS, LOGITS), expected)
    torch.testing.assert_close(c.generator_loss(LOGITS), F.binary_cross_entropy_with_logits(LOGITS, ones))
    assert c.realism_map(LOGITS.view(1, 1, 2, 2)).shape == (1, 1, 2, 2)


def test_patchgan_matches_the_original_size_and_init():
    with torch.device("meta"):
        d = registry().build("discriminator", {"name": "baseline_discriminator"})
        assert d(torch.empty(1, 1, 160, 224, 160)).shape == (1, 1, 18, 26, 18)
    assert sum(p.numel() for p in d.parameters()) == 11_048_769
    torch.manual_seed(0)
    flat = registry().build("discriminator", {"name": "baseline_discriminator", "spatial_dims": 2, "in_channels": 3,
                                              "channels": 8, "num_layers": 2, "norm": "instance"})
    assert flat(torch.rand(2, 3, 32, 32)).shape == (2, 1, 6, 6)
    assert abs(flat.model[0].weight.std().item() - 0.02) < 0.005
    with pytest.raises(RecipeError, match="baseline_discriminator"):
        registry().build("discriminator", {"name": "baseline_discriminator", "num_layers": 0})


def test_warmup_factor():
    assert [warmup_factor(e, start=2, length=4) for e in (0, 2, 3, 6, 9)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert warmup_factor(0.0) == 1.0 and warmup_factor(1.0, start=2) == 0.0


def tiny_vqvae() -> BaselineVQVAE:
    torch.manual_seed(0)
    return brainsynth.build("tokenizer", {"name": "baseline_vqvae", "channels": 8, "levels": 2, "num_res_layers": 1, "embedding_dim": 4,
                                      "codebook": {"name": "ema", "num_embeddings": 8}})


def test_adaptive_weight_is_the_gradient_norm_ratio_and_works_through_ddp(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(tiny_vqvae())
        x = torch.rand(1, 1, 16, 16, 16)
        reconstruction = model(x).reconstruction
        rec_loss = F.mse_loss(reconstruction, x)
        adv_loss = criterion("least_square").generator_loss(reconstruction.mean(dim=(2, 3, 4), keepdim=True))
        last = last_layer_weight(model)
        assert last is unwrap(model).decoder[-1].weight
        weight = adaptive_weight(rec_loss, adv_loss, last)
        g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(adv_loss, last, retain_graph=True)[0]
        torch.testing.assert_close(weight, g_rec.norm() / (g_adv.norm() + 1e-4))
        assert not weight.requires_grad and last.grad is None
        (rec_loss + weight * adv_loss).backward()  # the DDP backward still runs afterwards
        assert last.grad is not None
    finally:
        dist.destroy_process_group()
