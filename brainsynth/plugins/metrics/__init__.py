"""Built-in metrics (registered through the ``register_components`` hook, like any plugin).

A metric is called as ``metric(reconstruction, target)`` on ``[B, C, *spatial]`` tensors and
returns one value per volume; ``higher_is_better`` tells which way is better.
"""

from brainsynth.core.hookspecs import hookimpl

from .mae import MeanAbsoluteError
from .ms_ssim import MultiScaleSSIM
from .mse import MeanSquaredError
from .psnr import PeakSignalToNoiseRatio


@hookimpl
def register_components(registry):
    registry.register("metric", "ms_ssim", MultiScaleSSIM)
    registry.register("metric", "mae", MeanAbsoluteError)
    registry.register("metric", "mse", MeanSquaredError)
    registry.register("metric", "psnr", PeakSignalToNoiseRatio)
