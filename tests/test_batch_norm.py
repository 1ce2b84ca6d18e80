"""Synchronised batch norm: the swap keeps the module's state, and 2 gloo ranks normalise as one process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from brainsynth.core.batch_norm import SyncBatchNorm, synchronize


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 3, 3), nn.BatchNorm3d(3), nn.ReLU(), nn.Conv3d(3, 2, 3), nn.BatchNorm3d(2, momentum=None))


def test_the_swap_keeps_parameters_buffers_and_state_dict_keys():
    plain = network()
    keys = list(plain.state_dict())
    tensors = [id(t) for t in [*plain.parameters(), *plain.buffers()]]
    swapped, count = synchronize(plain, torch.device("cpu"))
    assert count == 2 and swapped is plain and isinstance(plain[1], SyncBatchNorm) and isinstance(plain[4], SyncBatchNorm)
    assert list(swapped.state_dict()) == keys
    assert [id(t) for t in [*swapped.parameters(), *swapped.buffers()]] == tensors
    alone, count = synchronize(nn.BatchNorm1d(4), torch.device("cpu"))
    assert count == 1 and isinstance(alone, SyncBatchNorm)


def test_without_a_process_group_it_is_plain_batch_norm_bit_for_bit():
    plain, synced = network(), synchronize(network(), torch.device("cpu"))[0]
    x = torch.randn(3, 1, 7, 7, 7)
    assert torch.equal(plain(x), synced(x))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), synced.state_dict().values()))
    plain.eval(), synced.eval()
    assert torch.equal(plain(x), synced(x))


def _worker(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        module = synchronize(network(), torch.device("cpu"))[0]
        model = nn.parallel.DistributedDataParallel(module)
        torch.manual_seed(1)
        x = torch.randn(4, 1, 6, 6, 6)[rank::world]  # the sampler deals items round-robin
        for _ in range(2):
            model(x).pow(2).mean().backward()
        results[rank] = ({k: p.grad.clone() for k, p in module.named_parameters()}, {k: b.clone() for k, b in module.named_buffers()})
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_ranks_of_2_give_the_gradients_and_running_statistics_of_one_rank_of_4(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    single = network()
    torch.manual_seed(1)
    x = torch.randn(4, 1, 6, 6, 6)
    for _ in range(2):
        single(x).pow(2).mean().backward()
    for rank in range(2):
        grads, buffers = results[rank]
        for key, parameter in single.named_parameters():
            torch.testing.assert_close(grads[key], parameter.grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")
        for key, buffer in single.named_buffers():  # momentum None: cumulative averages over both steps
            torch.testing.assert_close(buffers[key], buffer, rtol=1e-6, atol=1e-7, msg=f"rank {rank}: {key}")
