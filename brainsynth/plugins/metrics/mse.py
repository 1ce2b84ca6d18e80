"""Mean squared error between a reconstruction and its target, per volume."""

import torch


class MeanSquaredError:
    """MSE per volume (lower is better)."""

    name = "mse"
    higher_is_better = False

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (reconstruction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
