"""Previews of volumes: mid-slices, and PNGs that stay readable for coarse volumes."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from brainsynth.plugins.tasks.prior.volumes import PREVIEW_HEIGHT, mid_slices, write_png


def test_coarse_previews_are_enlarged_by_whole_factors_and_keep_their_values(tmp_path):
    volume = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    image = mid_slices(volume)  # three slices side by side, padded to the tallest
    assert image.shape == (14, 12 + 12 + 14)
    write_png(tmp_path / "small.png", image)
    written = mpimg.imread(tmp_path / "small.png")[..., 0]
    factor = written.shape[0] // image.shape[0]
    assert written.shape == (image.shape[0] * factor, image.shape[1] * factor) and written.shape[0] >= PREVIEW_HEIGHT
    np.testing.assert_allclose(written[::factor, ::factor], image, atol=2 / 255)  # the grey colour map and 8-bit file each round once
    large = np.zeros((PREVIEW_HEIGHT + 8, 50), dtype=np.float32)
    write_png(tmp_path / "large.png", large)
    assert mpimg.imread(tmp_path / "large.png").shape[:2] == large.shape
    assert not list(tmp_path.glob(".*.tmp.png"))
