"""Weights of the adversarial term: its start and linear warm-up, and the VQGAN adaptive weight.

This is the one place the training loop takes them from. The adaptive weight (Esser et al.
2021) balances the generator's adversarial term against the reconstruction loss by the ratio of
their gradient norms at the decoder's last layer. Under DDP both gradients are averaged over
ranks first, so every rank uses the same weight, the one a single process would compute on the
whole batch; the wrapper has no ``last_layer_weight``, so `last_layer_weight` unwraps it (the
original called the method on the wrapper and failed).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .linear_warmup import warmup_factor


def scheduled_weight(weight: float, progress: float, start_epoch: float = 0.0, warmup_epochs: float = 0.0) -> float:
    """The adversarial weight at `progress` fractional epochs: 0 before `start_epoch`, then a
    linear ramp from 0 to `weight` over `warmup_epochs` (at once when 0)."""
    return weight * warmup_factor(progress, start_epoch, warmup_epochs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def last_layer_weight(model: nn.Module) -> torch.Tensor:
    """The decoder's last weight of a tokenizer, wrapped or not."""
    return unwrap(model).last_layer_weight


def adaptive_weight(
    reconstruction_loss: torch.Tensor,
    generator_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1.0e4,
    eps: float = 1.0e-4,
) -> torch.Tensor:
    """``|dL_rec/dW| / (|dL_adv/dW| + eps)`` at `last_layer`, clamped to [0, max_weight], detached.

    Both losses keep their graphs (``retain_graph``) for the backward pass that follows.
    ``torch.autograd.grad`` does not accumulate into ``.grad``, so DDP's gradient hooks do not
    fire here; pass ``last_layer_weight(ddp_model)``. Under torch.distributed the two gradients
    are averaged over ranks (as DDP averages the real ones) before their norms are taken.
    """
    reconstruction_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    generator_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        both = torch.stack([reconstruction_grad.float(), generator_grad.float()])
        dist.all_reduce(both)
        reconstruction_grad, generator_grad = both / dist.get_world_size()
    weight = reconstruction_grad.float().norm() / (generator_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
