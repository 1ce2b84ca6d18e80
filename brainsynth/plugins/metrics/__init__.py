"""Built-in metrics (registered through the ``register_components`` hook, like any plugin; named
lazily, ``.module:Name``, so registering them imports nothing).

A per-volume metric (kind ``metric``: the tokenizer's ``metrics``) is called as
``metric(reconstruction, target)`` on ``[B, C, *spatial]`` tensors and returns one value per
volume; ``higher_is_better`` tells which way is better.

A set metric (kind ``set_metric``: the prior's ``evaluation.metrics``; ``ms_ssim_diversity``,
``mmd``, ``fid``, ``sharpness``, ``morphology_preservation``) compares a set of generated brains
with real ones, called as ``metric(samples, references)`` on two `VolumeSet` (see
`brainsynth.library.volume_sets`). `evaluate_samples` in `brainsynth.library.sample_evaluation`
runs them all. Two kinds, so that a recipe naming one where the other belongs is refused by
``validate`` with the names that fit.
"""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.register("metric", "ms_ssim", ".ms_ssim:MultiScaleSSIM")
    registry.register("metric", "mae", ".mae:MeanAbsoluteError")
    registry.register("metric", "mse", ".mse:MeanSquaredError")
    registry.register("metric", "psnr", ".psnr:PeakSignalToNoiseRatio")
    registry.register("set_metric", "ms_ssim_diversity", ".ms_ssim_diversity:MultiScaleSSIMDiversity")
    registry.register("set_metric", "mmd", ".mmd:MaximumMeanDiscrepancy")
    registry.register("set_metric", "fid", ".fid:FrechetDistance")
    registry.register("set_metric", "morphology_preservation", ".morphology_preservation:MorphologyPreservation")
    registry.register("set_metric", "sharpness", ".sharpness:Sharpness")
