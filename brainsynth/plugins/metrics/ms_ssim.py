"""MS-SSIM that works on 160-wide volumes: the original's window rule on top of MONAI's MS-SSIM.

MONAI's default 11-voxel window raises for any side <= 160 (the paper's crop is 160x224x160).
The original picked the window from the smallest side m (reference §7): 11 if m > 160, else
``floor((m / 16 + 1) / 2)`` made odd; a window of 1 or less is refused. That gives 5 for the
paper's crop, so its key metric was "MS-SSIM_5". Five scales, Gaussian sigma 1.5, K = (0.01, 0.03),
one value per volume.

Differences from the original's pytorch_msssim: MONAI down-samples with an unpadded 2x average
pool (pytorch_msssim pads odd sides), so the coarsest scale has ``m // 16`` voxels and the window
must be smaller than that; for 161 <= m < 176 the rule's 11 is lowered to the largest odd window
that fits (9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from brainsynth.core.errors import DataError

SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_window(spatial_shape: Sequence[int]) -> int:
    """The original's window size for volumes of `spatial_shape` (5 for 160x224x160)."""
    smallest = min(int(s) for s in spatial_shape)
    if smallest > 160:
        window = 11
    else:
        window = int((smallest / 16 + 1) // 2)
        if window % 2 == 0:
            window += 1
    coarsest = smallest // 16
    if window > coarsest:
        window = coarsest if coarsest % 2 else coarsest - 1
    if window <= 1:
        raise DataError(
            f"MS-SSIM with 5 scales needs every side of the volume to be at least 48 voxels; the smallest "
            f"side here is {smallest} (shape {'x'.join(str(int(s)) for s in spatial_shape)}). Evaluate on "
            f"larger volumes or use the mae/mse metrics."
        )
    return window


def ms_ssim(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window: int | None = None,
    sigma: float = 1.5,
) -> torch.Tensor:
    """MS-SSIM per volume (``[B]``) of ``[B, C, *spatial]`` tensors; `window` defaults to the rule."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"MS-SSIM needs equal shapes, got {tuple(reconstruction.shape)} and {tuple(target.shape)}")
    spatial_dims = reconstruction.dim() - 2
    if window is None:
        window = ms_ssim_window(reconstruction.shape[2:])
    from monai.metrics.regression import compute_ms_ssim  # MONAI: imported when built, not when plugins are listed

    values = compute_ms_ssim(
        reconstruction.float(), target.float(), spatial_dims=spatial_dims, data_range=data_range,
        kernel_size=window, kernel_sigma=sigma, weights=SCALE_WEIGHTS,
    )
    return values.view(-1)


class MultiScaleSSIM:
    """Reconstruction MS-SSIM (higher is better), one value per volume.

    Args:
        data_range: intensity range of the volumes (1 for min-max scaled data).
        window: Gaussian window size; unset means the original's rule for the volume size.
        clamp: clamp both volumes to ``[0, data_range]`` first (the original's default strategy).
    """

    name = "ms_ssim"
    higher_is_better = True

    def __init__(self, data_range: float = 1.0, window: int | None = None, clamp: bool = True) -> None:
        self.data_range = data_range
        self.window = window
        self.clamp = clamp

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.clamp:
            reconstruction = reconstruction.clamp(0.0, self.data_range)
            target = target.clamp(0.0, self.data_range)
        return ms_ssim(reconstruction, target, self.data_range, self.window)
