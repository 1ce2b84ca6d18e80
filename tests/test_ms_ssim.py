"""MS-SSIM with the original's window rule: works on 160-wide volumes where MONAI's default raises."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric

from brainsynth.core.errors import DataError
from brainsynth.plugins.metrics.ms_ssim import MultiScaleSSIM, ms_ssim, ms_ssim_window


def test_window_rule():
    assert ms_ssim_window((160, 224, 160)) == 5  # the paper's crop: "MS-SSIM_5"
    assert [ms_ssim_window((m, 300)) for m in (48, 64, 112, 176, 224)] == [3, 3, 5, 11, 11]
    assert ms_ssim_window((161, 300)) == 9  # 11 would not fit the unpadded 10-voxel coarsest scale
    with pytest.raises(DataError, match="at least 48 voxels; the smallest side here is 32"):
        ms_ssim_window((32, 64, 64))


def test_a_160_wide_volume_works_and_identical_volumes_score_one():
    torch.manual_seed(0)
    volume = torch.rand(1, 1, 160, 160, 160)
    with pytest.raises(ValueError):
        MultiScaleSSIMMetric(spatial_dims=3)(volume, volume)  # MONAI's default window
    assert torch.allclose(ms_ssim(volume, volume), torch.ones(1))


def test_distortion_lowers_the_score_per_volume():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 48, 56, 48)
    metric = MultiScaleSSIM()
    light = metric(target + 0.02 * torch.randn_like(target), target)
    heavy = metric(target + 0.3 * torch.randn_like(target), target)
    assert light.shape == (2,) and metric.higher_is_better
    assert (heavy < light).all() and (light < 1).all()
    images = torch.rand(3, 1, 64, 64)
    assert torch.allclose(ms_ssim(images, images), torch.ones(3))
