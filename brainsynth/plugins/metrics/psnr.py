"""Peak signal-to-noise ratio of a reconstruction, per volume."""

import torch


class PeakSignalToNoiseRatio:
    """PSNR in dB per volume (higher is better); identical volumes are capped at `max_db`."""

    name = "psnr"
    higher_is_better = True

    def __init__(self, data_range: float = 1.0, max_db: float = 100.0) -> None:
        self.data_range = data_range
        self.max_db = max_db

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = (reconstruction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        db = 10 * torch.log10(self.data_range**2 / mse.clamp_min(1e-30))
        return db.clamp(max=self.max_db)
