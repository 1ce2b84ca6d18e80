"""``baseline_discriminator``: the pix2pix PatchGAN of the original (reference §3.4), 3D or 2D.

``Conv(k4 s2) -> LeakyReLU(0.2)``, then ``num_layers - 1`` blocks of ``Conv(k4 s2, no bias) ->
norm -> LeakyReLU``, one more at stride 1, and a stride-1 conv to one logit per patch. Widths
grow as ``channels * min(2^n, 8)``. Init: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0.
At 64 channels and 3 layers it has about 11 M parameters; a 160x224x160 volume gives 18x26x18 logits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from brainsynth.core.errors import RecipeError


class BaselineDiscriminator(nn.Module):
    """PatchGAN discriminator: one realism logit per receptive-field patch.

    Args:
        spatial_dims: 3 for volumes, 2 for images.
        in_channels: image channels.
        channels: width of the first layer (ndf).
        num_layers: number of stride-2 blocks (n_layers).
        norm: ``batch`` (the original; plain BatchNorm), ``instance`` or ``none``. Batch norm
            with batch 1-2 per process is noisy; ``instance`` avoids that.
    """

    def __init__(
        self,
        spatial_dims: Literal[2, 3] = 3,
        in_channels: int = 1,
        channels: int = 64,
        num_layers: int = 3,
        norm: Literal["batch", "instance", "none"] = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or channels < 1 or num_layers < 1 or in_channels < 1:
            raise RecipeError(
                f"discriminator 'baseline_discriminator': need spatial_dims 2 or 3 and positive in_channels, "
                f"channels and num_layers; got {spatial_dims}, {in_channels}, {channels}, {num_layers}."
            )
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        norm_layer = {
            "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims],
            "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims],
        }.get(norm)

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            layers: list[nn.Module] = [conv(cin, cout, 4, stride=stride, padding=1, bias=norm_layer is None)]
            if norm_layer is not None:
                layers.append(norm_layer(cout, affine=True) if norm == "instance" else norm_layer(cout))
            return layers + [nn.LeakyReLU(0.2, inplace=True)]

        layers: list[nn.Module] = [conv(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        width = channels
        for n in range(1, num_layers):
            layers += block(width, channels * min(2**n, 8), stride=2)
            width = channels * min(2**n, 8)
        layers += block(width, channels * min(2**num_layers, 8), stride=1)
        layers.append(conv(channels * min(2**num_layers, 8), 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if module.weight is not None:
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, *spatial]`` -> patch logits ``[B, 1, *patches]``."""
        return self.model(x)
