"""Sharpness: how crisp generated (or reconstructed) brains are next to real ones, as one number.

MS-SSIM at coarse grids is dominated by the head outline and stays high for a brain-shaped
blur; this metric sees the blur. Each volume's sharpness is the mean gradient magnitude (per
mm, central differences over the voxel spacing of its affine) inside its brain (the morphology
foreground), on the [0, 1] min-max scale every evaluated volume shares. The reported
``sharpness_ratio`` is the mean over samples divided by the mean over real brains: 1 is as sharp
as real, below 1 blurrier (0.5: edges half as steep on average), above 1 sharper or noisier than
real. Closer to 1 is better.
"""

from __future__ import annotations

from brainsynth.core.errors import DataError
from brainsynth.library.volume_sets import SetMetricResult, VolumeSet
from brainsynth.library.volume_sharpness import set_sharpness, sharpness_ratio


class Sharpness:
    """Set metric: ``sharpness_ratio``, the samples' mean gradient magnitude inside the brain over the real brains'."""

    name = "sharpness"
    higher_is_better = None  # 1 is best

    def __call__(self, samples: VolumeSet, references: VolumeSet | None = None) -> SetMetricResult:
        if references is None:
            raise DataError("sharpness compares samples with real brains; give the real set too.")
        made, real = set_sharpness(samples), set_sharpness(references)
        rows = [{"set": samples.label, "name": n, "sharpness": float(v)} for n, v in zip(samples.names, made)]
        rows += [{"set": references.label, "name": n, "sharpness": float(v)} for n, v in zip(references.names, real)]
        note = (f"mean gradient magnitude (per mm, [0, 1] scale) inside the brain, mean over {len(made)} samples / "
                f"mean over {len(real)} real brains: 1 = as sharp as real, < 1 blurrier")
        return SetMetricResult({"sharpness_ratio": sharpness_ratio(made, real)}, rows=rows, notes={"sharpness_ratio": note})
