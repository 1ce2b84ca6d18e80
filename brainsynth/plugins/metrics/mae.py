"""Mean absolute error between a reconstruction and its target, per volume."""

import torch


class MeanAbsoluteError:
    """MAE per volume (lower is better)."""

    name = "mae"
    higher_is_better = False

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (reconstruction.float() - target.float()).abs().flatten(1).mean(dim=1)
