"""Batch norm over the global batch under DDP: N processes of batch B normalise as one of N x B.

Plain batch norm under DDP normalises each rank's B items with their own statistics and keeps
per-rank running statistics, so a discriminator with ``norm: batch`` (the paper's) trains
differently with every process count: its gradients were ~5 % off 1 x 4 at 2 x 2. `synchronize`
swaps every BatchNorm*d of a trained module for a synchronised one before DDP wraps it, keeping
its parameters and buffers (same objects, same state-dict keys, so checkpoints are unchanged):

* on CUDA, torch's `torch.nn.SyncBatchNorm` (fused kernels, nccl);
* elsewhere `SyncBatchNorm` below, because torch's refuses CPU tensors. It sums the per-channel
  sums and squared deviations over ranks with a differentiable all-reduce (`_SumOverRanks`;
  torch 2.13 deprecates the one in ``torch.distributed.nn``), so the backward pass also sees the
  whole batch; the running variance uses the unbiased estimate over the global count, as one
  process would.

Outside training, or in a single process, it is exactly `torch.nn.functional.batch_norm`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum of every rank's gradient (each rank's loss used the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of every rank's batch together (any input ``[N, C, ...]``)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions [N, C, ...], got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        synchronised = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synchronised:
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64, device=input.device)
        dist.all_reduce(count)
        # float64 sums, as torch's CPU batch norm accumulates: the global mean and variance match its
        mean = _SumOverRanks.apply(torch.sum(input, dims, dtype=torch.float64)) / count
        centered = input - mean.to(input.dtype).view(shape)
        variance = _SumOverRanks.apply(torch.sum(centered * centered, dims, dtype=torch.float64)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                n = float(count)
                unbiased = variance * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        output = centered * torch.rsqrt(variance + self.eps).to(input.dtype).view(shape)
        if self.weight is not None:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def _copy(source: nn.modules.batchnorm._BatchNorm, kind: type[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    """A `kind` batch norm holding `source`'s parameters and buffers themselves (not copies)."""
    target = kind(source.num_features, source.eps, source.momentum, source.affine, source.track_running_stats)
    if source.affine:
        target.weight, target.bias = source.weight, source.bias
    target.running_mean, target.running_var = source.running_mean, source.running_var
    target.num_batches_tracked = source.num_batches_tracked
    target.train(source.training)
    return target


def synchronize(module: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """`module` with every batch-norm layer synchronised over ranks; returns it and how many were swapped.

    Children are replaced in place; a module that is itself a batch norm is returned swapped.
    """
    kind = nn.SyncBatchNorm if device.type == "cuda" else SyncBatchNorm
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if isinstance(module, plain):
        return _copy(module, kind), 1
    swapped = 0
    for name, child in module.named_children():
        replaced, count = synchronize(child, device)
        if replaced is not child:
            setattr(module, name, replaced)
        swapped += count
    return module, swapped
