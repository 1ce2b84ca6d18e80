"""Building blocks of the baseline VQ-VAE: activations and the slim residual layer."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .recompute import RecomputeScope

ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (functools.partial(nn.ReLU, inplace=True), functools.partial(F.relu, inplace=True)),
    "leakyrelu": (
        functools.partial(nn.LeakyReLU, 0.01, inplace=True),
        functools.partial(F.leaky_relu, negative_slope=0.01, inplace=True),
    ),
    "elu": (functools.partial(nn.ELU, inplace=True), functools.partial(F.elu, inplace=True)),
    "silu": (functools.partial(nn.SiLU, inplace=True), functools.partial(F.silu, inplace=True)),
    "gelu": (nn.GELU, F.gelu),
}
"""Hidden activations: a module factory and the same function; in place wherever torch allows."""

OUTPUT_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
"""The convolution of each number of spatial dimensions (what MONAI's ``Conv`` factory returns)."""
CONV_TRANSPOSED = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


class SlimResidualLayer(nn.Sequential):
    """``act(x + conv1x1(dropout(act(conv3x3(x)))))`` at constant width (reference §2.1).

    A `nn.Sequential` so that its parameters are named ``0.weight`` (3x3x3) and ``3.weight``
    (1x1x1) exactly as in the original; the outer activation is a plain function.
    """

    def __init__(self, spatial_dims: int, channels: int, dropout: float = 0.0, act: str = "relu") -> None:
        conv = CONV[spatial_dims]
        hidden_act, self_act = ACTIVATIONS[act]
        drop = DROPOUT[spatial_dims](dropout) if dropout > 0 else nn.Identity()
        super().__init__(
            conv(channels, channels, kernel_size=3, padding=1),
            hidden_act(),
            drop,
            conv(channels, channels, kernel_size=1),
        )
        self._output_act = self_act

    def forward(self, x: torch.Tensor, recompute: RecomputeScope | None = None) -> torch.Tensor:
        """With a `recompute` scope, the output is saved for backward as ``merge(hidden, x)``."""
        hidden = self.hidden(x)
        out = self.merge(hidden, x)
        if recompute is not None:
            recompute.register(out, self.merge, hidden, x)
        return out

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The expensive half: ``dropout(act(conv3x3(x)))``."""
        return self[2](self[1](self[0](x)))

    def merge(self, hidden: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The cheap half, ``act(x + conv1x1(hidden))``: recomputable from `hidden` and `x`."""
        branch = self[3](hidden)
        branch += x  # in place: the 1x1 conv's output is needed by nothing else; saves a full-size copy
        return self._output_act(branch)


def residual_stack(spatial_dims: int, channels: int, layers: int, dropout: float, act: str) -> nn.Sequential:
    """`layers` slim residual layers in a row (an empty stack is the identity)."""
    return nn.Sequential(*(SlimResidualLayer(spatial_dims, channels, dropout, act) for _ in range(layers)))
