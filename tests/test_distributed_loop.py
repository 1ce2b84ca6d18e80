"""The shared loop's pieces in one process: data order per epoch and rank, precision, fp32 codebook."""

from __future__ import annotations

import pytest
import torch

import brainsynth
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)

from brainsynth.core.checkpoint import read_checkpoint
from brainsynth.core.loop import epoch_batches, epoch_indices, evaluation_due
from brainsynth.core.precision import autocast
from brainsynth.library.adversarial_weighting import scheduled_weight


def test_validation_runs_every_n_epochs_and_after_the_last():
    assert [e + 1 for e in range(12) if evaluation_due(e, 5, 12)] == [5, 10, 12]
    assert [e + 1 for e in range(3) if evaluation_due(e, 5, 3)] == [3]
    assert [e + 1 for e in range(4) if evaluation_due(e, 1, 4)] == [1, 2, 3, 4]


def test_uniform_order_is_reshuffled_each_epoch_and_split_over_ranks():
    orders = [epoch_indices(10, seed=3, epoch=e) for e in range(3)]
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert len({tuple(o) for o in orders}) == 3  # a new permutation every epoch
    assert epoch_indices(10, seed=3, epoch=1) == orders[1]  # a function of (seed, epoch) only
    shards = [epoch_indices(10, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5 and sorted(shards[0] + shards[1]) == list(range(10))
    padded = [epoch_indices(5, seed=3, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 3  # padded so every rank runs as many steps
    assert epoch_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5]]
    assert epoch_batches([4], 3) == [[4]]


def test_weighted_order_follows_weights_and_is_redrawn_each_epoch():
    weights = [0.0, 1.0, 1.0, 8.0, 0.0, 1.0]
    draws = [epoch_indices(6, seed=0, epoch=e, rank=r, world_size=2, weights=weights) for e in range(40) for r in range(2)]
    flat = [i for d in draws for i in d]
    assert 0 not in flat and 4 not in flat
    # each rank draws from its half of a fresh permutation, so item 3 (weight 8) is drawn about
    # twice as often as any weight-1 item overall (~80% of draws when in the shard, half the time)
    assert flat.count(3) > 1.5 * max(flat.count(1), flat.count(2), flat.count(5))
    assert len({tuple(d) for d in draws[0::2]}) > 10  # rank 0 draws afresh each epoch
    assert epoch_indices(6, seed=0, epoch=7, rank=1, world_size=2, weights=weights) == draws[15]


def test_adversarial_schedule_starts_and_ramps_within_epochs():
    assert scheduled_weight(0.5, 0.9, start_epoch=1, warmup_epochs=2) == 0.0
    assert scheduled_weight(0.5, 2.0, start_epoch=1, warmup_epochs=2) == pytest.approx(0.25)
    assert scheduled_weight(0.5, 3.5, start_epoch=1, warmup_epochs=2) == 0.5
    assert scheduled_weight(0.5, 1.0, start_epoch=1) == 0.5


def test_codebook_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    network = brainsynth.build("tokenizer", {"name": "baseline_vqvae", "channels": 8, "levels": 2, "num_res_layers": 1, "embedding_dim": 4,
                                      "codebook": {"name": "ema", "num_embeddings": 8}})
    seen, quantize = {}, network.codebook.quantize

    def watched(z):
        out = quantize(z)
        seen.update(z=z.dtype, q=out.quantized.dtype, loss=out.loss.dtype)
        return out

    network.codebook.quantize = watched
    with autocast("bf16", torch.device("cpu")):
        out = network(torch.rand(2, 1, 16, 16, 16))
    # the encoder ran in bf16; the codebook searched, updated and returned in fp32
    assert seen == {"z": torch.bfloat16, "q": torch.float32, "loss": torch.float32}
    assert out.reconstruction.dtype == torch.bfloat16 and out.quantization_loss.dtype == torch.float32
    assert {b.dtype for b in network.codebook.buffers()} == {torch.float32}
    assert network.codebook.codes.dtype == torch.float32


def _recipe(cohort, root, precision: str) -> str:
    return (
        "task: tokenizer\n"
        f"experiment: {{name: {precision}, root: {root}}}\n"
        f"precision: {precision}\n"
        "device: cpu\n"
        f"data: {{name: nifti, train: {cohort / 'val.tsv'}, roi: [24, 24, 24]}}\n"
        "network: {name: baseline_vqvae, channels: 4, levels: 2, num_res_layers: 1, embedding_dim: 4,\n"
        "          codebook: {name: ema, num_embeddings: 16}}\n"
        "loss: {name: mse}\n"
        "discriminator: {name: baseline_discriminator, channels: 4, num_layers: 2, norm: none}\n"
        "adversarial: {weight: 0.1, adaptive: true}\n"
        "train: {epochs: 1, batch_size: 2, log_every: 1}\n"
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_tokenizer_trains_in_mixed_precision(precision, tmp_path, tiny_cohort, run_cli):  # noqa: F811
    path = tmp_path / "tok.yaml"
    path.write_text(_recipe(tiny_cohort, tmp_path / "runs", precision))
    result = run_cli("run", str(path))
    assert result.code == 0, result
    state = read_checkpoint(tmp_path / "runs" / precision / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(v.dtype != torch.float16 and v.dtype != torch.bfloat16 for v in state["modules"]["network"].values())
    # fp16 keeps a GradScaler (its scale is part of the checkpoint); bf16 needs none
    assert bool(state["scalers"]["network"]) == (precision == "fp16")
