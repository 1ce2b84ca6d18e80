"""Codebooks: the EMA update by hand, eval mode, chunked search, restarts, warm-up, DDP sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from brainsynth.core import global_batch
from brainsynth.core.errors import RecipeError
from brainsynth.plugins.codebooks.ema import EMACodebook
from brainsynth.plugins.codebooks.search import nearest_codes, rule_of_thumb_decay_epochs, scheduled_decay
from brainsynth.plugins.codebooks.vanilla import VanillaCodebook


def ema_with_codes(codes: list[float], **options) -> EMACodebook:
    codebook = EMACodebook(embedding_dim=1, num_embeddings=len(codes), **options)
    with torch.no_grad():
        codebook.embedding.weight.copy_(torch.tensor(codes).view(-1, 1))
        codebook.embed_avg.copy_(codebook.embedding.weight)
    return codebook


def test_ema_update_matches_a_hand_computed_example():
    codebook = ema_with_codes([0.0, 10.0], decay=0.5, epsilon=0.5, commitment_cost=0.25)
    z = torch.tensor([1.0, 2.0, 9.0]).view(1, 1, 3)  # [B, D, grid]
    out = codebook.quantize(z)
    # 1 and 2 go to code 0, 9 to code 1: counts (2, 1), sums (3, 9)
    assert out.indices.tolist() == [[0, 0, 1]]
    # cluster_size = 0.5 * 0 + 0.5 * (2, 1) = (1, 0.5); embed_avg = 0.5 * (0, 10) + 0.5 * (3, 9) = (1.5, 9.5)
    torch.testing.assert_close(codebook.cluster_size, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(codebook.embed_avg.view(-1), torch.tensor([1.5, 9.5]))
    # Laplace: n = 1.5, smoothed = (N + 0.5) / (1.5 + 2 * 0.5) * 1.5 = (0.9, 0.6) -> codes (1.5/0.9, 9.5/0.6)
    torch.testing.assert_close(codebook.codes.view(-1), torch.tensor([1.5 / 0.9, 9.5 / 0.6]))
    # commitment against the codes used for this batch (0, 0, 10): 0.25 * mean(1, 4, 1)
    torch.testing.assert_close(out.loss, torch.tensor(0.5))
    torch.testing.assert_close(out.quantized.view(-1), torch.tensor([0.0, 0.0, 10.0]))
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert math.isclose(out.perplexity.item(), expected, rel_tol=1e-5) and out.usage.item() == 1.0


@pytest.mark.parametrize("kind", [EMACodebook, VanillaCodebook])
def test_eval_mode_leaves_the_codebook_unchanged(kind):
    torch.manual_seed(0)
    codebook = kind(embedding_dim=4, num_embeddings=8, dead_code_restart=True, restart_every=1).eval()
    before = {k: v.clone() for k, v in codebook.state_dict().items()}
    codebook.quantize(torch.randn(2, 4, 3, 3, 3))
    after = codebook.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    codebook.train().quantize(torch.randn(2, 4, 3, 3, 3))
    assert not torch.equal(before["cluster_size"], codebook.state_dict()["cluster_size"])


def test_chunked_search_equals_brute_force():
    torch.manual_seed(0)
    flat, codes = torch.randn(1000, 8), torch.randn(37, 8)
    expected = torch.cdist(flat, codes).argmin(dim=1)
    assert torch.equal(nearest_codes(flat, codes, max_elements=37 * 7), expected)  # 143 chunks of 7 rows


def test_vanilla_codebook_trains_codes_and_commits_the_encoder():
    torch.manual_seed(0)
    codebook = VanillaCodebook(embedding_dim=3, num_embeddings=4, commitment_cost=0.5)
    z = torch.randn(1, 3, 5, requires_grad=True)
    out = codebook.quantize(z)
    q = codebook.codes.detach()[out.indices.view(-1)].t().reshape(1, 3, 5)
    expected = (q - z.detach()).pow(2).mean() * 1.5  # codebook term + 0.5 x commitment (same value)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert codebook.embedding.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", [EMACodebook, VanillaCodebook])
def test_dead_codes_restart_on_encoder_vectors(kind):
    torch.manual_seed(0)
    codebook = kind(embedding_dim=2, num_embeddings=6, dead_code_restart=True, restart_every=2, dead_code_threshold=0.5)
    with torch.no_grad():
        codebook.embedding.weight.copy_(torch.tensor([[0.0, 0.0]] + [[100.0, 100.0]] * 5))
        if kind is EMACodebook:
            codebook.embed_avg.copy_(codebook.embedding.weight)
    z = (torch.randn(1, 2, 20) * 0.1).contiguous()
    codebook.quantize(z)  # step 1: no restart yet
    assert codebook.codes[1:].abs().min() > 50
    codebook.quantize(z)  # step 2: codes 1..5 never used -> moved onto batch vectors
    vectors = z[0].t()
    for code in codebook.codes[1:]:
        assert (vectors - code).abs().sum(dim=1).min() < 1e-6
    assert codebook.quantize(z).usage.item() > 1 / 6


@pytest.mark.parametrize("kind", [EMACodebook, VanillaCodebook])
def test_in_a_training_step_restarts_draw_with_the_steps_generator(kind):
    """So that every process count restarts the same codes onto the same vectors (see test_distributed_tokenizer)."""
    torch.manual_seed(0)
    codebook = kind(embedding_dim=2, num_embeddings=6, dead_code_restart=True, restart_every=1, dead_code_threshold=1e9)
    z = torch.randn(2, 2, 10)
    with global_batch.step_scope(seed=1, step=4) as step:
        codebook.quantize(z)  # every code is below the threshold: all 6 restart
    rows = torch.randint(0, 20, (6,), generator=step.generator("dead_code_restart"))
    assert torch.equal(codebook.codes.detach(), torch.movedim(z, 1, -1).reshape(-1, 2)[rows])


def test_decay_warmup_schedules():
    assert scheduled_decay(5, 0.5, 0.99, "none", 10) == 0.5
    assert math.isclose(scheduled_decay(5, 0.5, 0.99, "linear", 10), 0.745)
    assert scheduled_decay(12, 0.5, 0.99, "linear", 10) == 0.99
    assert [round(scheduled_decay(e, 0.5, 0.9, "step", 8), 3) for e in (0, 1, 3, 5, 7, 20)] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    assert rule_of_thumb_decay_epochs(iterations_per_epoch=437, batch_size=32) == 200
    codebook = EMACodebook(embedding_dim=2, num_embeddings=4, decay=0.5, decay_warmup="linear", max_decay_epochs=4)
    codebook.on_epoch_start(2, iterations_per_epoch=10, batch_size=2)
    assert math.isclose(codebook.decay, 0.745) and codebook.summaries()["decay"] == codebook.decay
    with pytest.raises(RecipeError, match="decay must be in"):
        EMACodebook(embedding_dim=2, decay=1.5)


def test_quantisation_stays_fp32_under_autocast():
    codebook = EMACodebook(embedding_dim=4, num_embeddings=8)
    z = torch.randn(1, 4, 2, 2, 2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = codebook.quantize(z)
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32


def _ddp_worker(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        codebook = EMACodebook(embedding_dim=2, num_embeddings=4, decay=0.5)
        z = torch.randn(world, 2, 6)[rank : rank + 1]  # each rank sees its own half of one batch
        codebook.quantize(z)
        results[rank] = codebook.codes.clone()
    finally:
        dist.destroy_process_group()


def test_ema_statistics_are_summed_over_ranks(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    torch.manual_seed(0)
    single = EMACodebook(embedding_dim=2, num_embeddings=4, decay=0.5)
    single.quantize(torch.randn(2, 2, 6))  # the whole batch in one process
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], single.codes)


def _unsynced_restart_worker(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        codebook = VanillaCodebook(embedding_dim=2, num_embeddings=4, ddp_sync=False, dead_code_restart=True)
        try:
            codebook.quantize(torch.randn(1, 2, 6))
        except RecipeError as exc:
            results[rank] = str(exc)
    finally:
        dist.destroy_process_group()


def test_restarts_under_several_processes_without_summed_counts_are_refused(tmp_path):
    """Per-rank counts would restart different codes on each rank, which then wait on each other."""
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_unsynced_restart_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    assert sorted(results.keys()) == [0, 1] and "needs ddp_sync: true" in results[0]
