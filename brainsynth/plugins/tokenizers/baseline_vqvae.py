"""``baseline_vqvae``: the original's VQ-VAE (reference §2.1), in 3D or 2D.

Encoder: `levels` stages of [strided conv, activation, R slim residual layers], then a 3x3 conv to
the code size. Decoder: a 3x3 conv from the code size, then `levels` stages of [R slim residual
layers, transposed conv (or sub-pixel up-sampling at the last stage), activation except last].
Channels: ``channels // 2`` at every stage but the deepest, which has ``channels``.

Parameter names mirror the original's one-to-one (``encoder.<i>...``, ``decoder.<i>...``, see
`brainsynth.library.original_weights.convert_original_state_dict`); the paper configuration has
28,189,473 parameters, the 2048 x 32 codebook included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.schema import Fraction, NonNegativeInt, PositiveInt, component_block
from brainsynth.core.tokenizer import Codebook, Tokenizer

from .blocks import ACTIVATIONS, CONV, CONV_TRANSPOSED, OUTPUT_ACTIVATIONS, SlimResidualLayer, residual_stack
from .recompute import RecomputeScope

DownParameters = tuple[int, int, int, int]
"""(kernel, stride, padding, dilation) of one encoder stage."""
UpParameters = tuple[int, int, int, int, int]
"""(kernel, stride, padding, output_padding, dilation) of one decoder stage."""


def _conv_output(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _transposed_output(size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


class BaselineVQVAE(Tokenizer):
    """The original's VQ-VAE: strided convs, slim residual layers, one codebook.

    Args:
        spatial_dims: 3 for volumes, 2 for images.
        in_channels: image channels (the original 3D network has 1).
        channels: width of the deepest stage; the other stages have half.
        levels: number of stride-2 stages (4 in the paper: 160x224x160 -> 10x14x10).
        num_res_layers: slim residual layers per stage.
        downsample_parameters: one (kernel, stride, padding, dilation) per level.
        upsample_parameters: one (kernel, stride, padding, output_padding, dilation) per level.
        embedding_dim: code size D (pre-/post-quantisation convolutions map to and from it).
        codebook: the codebook block, e.g. ``{name: ema, num_embeddings: 2048, decay: 0.5}`` (the engine
            builds it with the run's registry and passes the `Codebook`).
        dropout: dropout inside the residual layers.
        act: hidden activation.
        output_act: optional activation of the reconstruction (none in the paper).
        use_subpixel_conv: replace the last transposed conv by MONAI's sub-pixel up-sampler.
        checkpointing: recompute the residual stacks in the backward pass (activation
            checkpointing) to save memory at the cost of about one extra forward pass.
        channels_last: keep weights and activations channels-last (``torch.channels_last_3d``),
            the layout oneDNN and cuDNN convolve in without converting; outputs come back in the
            usual layout. Measured on 2 CPU cores in bf16: a demo tokenizer step 0.074 -> 0.052 s.

    Without `checkpointing`, the backward pass still recomputes what is cheap: every residual
    layer's output (one 1x1 conv) and the first encoder stage's output (a conv of the
    few-channel image), see `recompute.RecomputeScope`. That keeps about half of the
    activations out of memory for about 2% more arithmetic (gradients are bit-identical);
    `recompute_cheap_activations = False` on an instance turns it off.
    """

    recompute_cheap_activations: bool = True

    def __init__(
        self,
        spatial_dims: Literal[2, 3] = 3,
        in_channels: PositiveInt = 1,
        channels: PositiveInt = 256,
        levels: PositiveInt = 4,
        num_res_layers: NonNegativeInt = 3,
        downsample_parameters: list[DownParameters] | None = None,
        upsample_parameters: list[UpParameters] | None = None,
        embedding_dim: PositiveInt = 32,
        codebook: component_block("codebook") | None = None,
        dropout: Fraction = 0.0,
        act: Literal["relu", "leakyrelu", "elu", "silu", "gelu"] = "relu",
        output_act: Literal["sigmoid", "tanh", "relu"] | None = None,
        use_subpixel_conv: bool = False,
        checkpointing: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        down = list(downsample_parameters) if downsample_parameters is not None else [(4, 2, 1, 1)] * levels
        up = list(upsample_parameters) if upsample_parameters is not None else [(4, 2, 1, 0, 1)] * levels
        self._check(spatial_dims, in_channels, channels, levels, num_res_layers, down, up, embedding_dim, dropout)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        self.downsample_parameters = [tuple(p) for p in down]
        self.upsample_parameters = [tuple(p) for p in up]
        self.use_subpixel_conv = use_subpixel_conv
        self.checkpointing = checkpointing
        self.encoder = self._build_encoder(spatial_dims, in_channels, channels, num_res_layers, down, embedding_dim, dropout, act)
        self.decoder = self._build_decoder(
            spatial_dims, in_channels, channels, num_res_layers, up, embedding_dim, dropout, act, output_act, use_subpixel_conv
        )
        self.codebook = checked_codebook(codebook, embedding_dim)
        self.memory_format = (
            (torch.channels_last_3d if spatial_dims == 3 else torch.channels_last) if channels_last else None
        )
        if self.memory_format is not None:
            self.encoder.to(memory_format=self.memory_format)
            self.decoder.to(memory_format=self.memory_format)

    @staticmethod
    def _check(spatial_dims, in_channels, channels, levels, num_res_layers, down, up, embedding_dim, dropout) -> None:
        def fail(message: str) -> None:
            raise RecipeError(f"tokenizer 'baseline_vqvae': {message}")

        if spatial_dims not in (2, 3):
            fail(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if levels < 1:
            fail(f"levels must be >= 1, got {levels}.")
        if channels < 2 or channels % 2:
            fail(f"channels must be an even number >= 2 (the shallow stages use channels // 2), got {channels}.")
        for key, value in (("in_channels", in_channels), ("embedding_dim", embedding_dim)):
            if value < 1:
                fail(f"{key} must be >= 1, got {value}.")
        if num_res_layers < 0:
            fail(f"num_res_layers must be >= 0, got {num_res_layers}.")
        if not 0.0 <= dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {dropout}.")
        for key, values, width, meaning in (
            ("downsample_parameters", down, 4, "(kernel, stride, padding, dilation)"),
            ("upsample_parameters", up, 5, "(kernel, stride, padding, output_padding, dilation)"),
        ):
            if len(values) != levels:
                fail(f"{key} has {len(values)} entries but levels is {levels}; give one {meaning} per level.")
            for i, value in enumerate(values):
                if len(value) != width or any(int(v) != v or v < 0 for v in value):
                    fail(f"{key}[{i}] must be {width} non-negative integers {meaning}, got {list(value)}.")

    @staticmethod
    def _build_encoder(spatial_dims, in_channels, channels, num_res_layers, down, embedding_dim, dropout, act) -> nn.Sequential:
        conv = CONV[spatial_dims]
        half, last = channels // 2, len(down) - 1
        layers: list[nn.Module] = []
        for i, (kernel, stride, padding, dilation) in enumerate(down):
            width = channels if i == last else half
            layers += [
                conv(in_channels if i == 0 else half, width, kernel, stride=stride, padding=padding, dilation=dilation),
                ACTIVATIONS[act][0](),
                residual_stack(spatial_dims, width, num_res_layers, dropout, act),
            ]
        layers.append(conv(channels, embedding_dim, kernel_size=3, padding=1))
        return nn.Sequential(*layers)

    @staticmethod
    def _build_decoder(
        spatial_dims, out_channels, channels, num_res_layers, up, embedding_dim, dropout, act, output_act, subpixel
    ) -> nn.Sequential:
        conv = CONV[spatial_dims]
        transposed = CONV_TRANSPOSED[spatial_dims]
        half, last = channels // 2, len(up) - 1
        layers: list[nn.Module] = [conv(embedding_dim, channels, kernel_size=3, padding=1)]
        for i, (kernel, stride, padding, output_padding, dilation) in enumerate(up):
            width = channels if i == 0 else half
            target = out_channels if i == last else half
            layers.append(residual_stack(spatial_dims, width, num_res_layers, dropout, act))
            if i == last and subpixel:
                from monai.networks.blocks import SubpixelUpsample

                layers.append(SubpixelUpsample(spatial_dims, width, target, scale_factor=stride, apply_pad_pool=True, bias=True))
            else:
                layers.append(
                    transposed(width, target, kernel, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation)
                )
            if i != last:
                layers.append(ACTIVATIONS[act][0]())
        if output_act is not None:
            layers.append(OUTPUT_ACTIVATIONS[output_act]())
        return nn.Sequential(*layers)

    def _run(self, stages: nn.Sequential, x: torch.Tensor, *, input_stage: bool = False) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return stages(x)
        if self.checkpointing and self.training:
            for module in stages:
                x = checkpoint(module, x, use_reentrant=False) if _is_stack(module) and len(module) else module(x)
            return x
        if not self.recompute_cheap_activations:
            return stages(x)
        with RecomputeScope() as scope:
            image = x
            for i, module in enumerate(stages):
                if _is_stack(module):
                    for layer in module:
                        x = layer(x, scope)
                else:
                    x = module(x)
                    if input_stage and i == 1:  # act(strided conv(image)): the image has few channels
                        scope.register(x, stages[:2], image)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise DataError(
                f"baseline_vqvae was built for {self.in_channels}-channel {self.spatial_dims}D images "
                f"[batch, {self.in_channels}, {', '.join('n' * self.spatial_dims)}], got shape {tuple(x.shape)}. "
                f"Check the data, or the network's spatial_dims and in_channels."
            )
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return self._run(self.encoder, x, input_stage=True)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        if self.memory_format is None:
            return self._run(self.decoder, quantized)
        return self._run(self.decoder, quantized.contiguous(memory_format=self.memory_format)).contiguous()

    def token_grid(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        grid = []
        for size in spatial_shape:
            for kernel, stride, padding, dilation in self.downsample_parameters:
                size = _conv_output(size, kernel, stride, padding, dilation)
            grid.append(int(size))
        return tuple(grid)

    def output_shape(self, grid: Sequence[int]) -> tuple[int, ...]:
        shape = []
        last = len(self.upsample_parameters) - 1
        for size in grid:
            for i, (kernel, stride, padding, output_padding, dilation) in enumerate(self.upsample_parameters):
                if i == last and self.use_subpixel_conv:
                    size = size * stride
                else:
                    size = _transposed_output(size, kernel, stride, padding, output_padding, dilation)
            shape.append(int(size))
        return tuple(shape)

    @property
    def downsampling(self) -> int:
        return math.prod(int(stride) for _, stride, _, _ in self.downsample_parameters)

    @property
    def last_layer_weight(self) -> torch.Tensor:
        for module in reversed(list(self.decoder.modules())):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter):
                return weight
        raise RuntimeError("the decoder has no weighted layer")


def _is_stack(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and all(isinstance(layer, SlimResidualLayer) for layer in module)


def checked_codebook(block: Codebook | None, embedding_dim: int) -> Codebook:
    """The codebook the engine built from the ``codebook:`` block with the run's registry.

    A tokenizer constructed directly in Python is given one too: a plugin never builds another
    plugin's component through the process-wide registry, so a block here is refused with the call
    that builds it.
    """
    if isinstance(block, Codebook):
        if block.embedding_dim != embedding_dim:
            raise RecipeError(f"codebook: embedding_dim {block.embedding_dim} differs from the tokenizer's {embedding_dim}.")
        return block
    shown = dict(block) if isinstance(block, dict) else {"name": "ema"}
    raise RecipeError(
        f"baseline_vqvae: codebook is a built Codebook, got {block!r}; in Python, build the whole tokenizer with "
        f"brainsynth.build('tokenizer', {{'name': 'baseline_vqvae', ..., 'codebook': {shown!r}}}) or pass "
        f"codebook=brainsynth.build('codebook', {shown!r}, embedding_dim={embedding_dim})."
    )
