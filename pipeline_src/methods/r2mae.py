"""``r2mae``: random masks whose ratio is drawn uniformly from [ratio_min, ratio_max] per sample."""
from __future__ import annotations

import torch
from torch import Tensor

from .random_masking import RandomMasking


def uniform_ratio(u: Tensor, ratio_min: float, ratio_max: float) -> Tensor:
    # u: [B] uniform in [0, 1) -> [B] float64 in [ratio_min, ratio_max)
    return ratio_min + (ratio_max - ratio_min) * u.to(torch.float64)


class R2MAE(RandomMasking):
    display_name = "R2MAE"
    defaults = {"ratio_min": 0.15, "ratio_max": 0.6}

    def sample_ratio(self, batch_size: int, generator: torch.Generator | None,
                     device: torch.device) -> Tensor:
        u = self.uniform((batch_size,), generator, device)
        return uniform_ratio(u, float(self.cfg["ratio_min"]), float(self.cfg["ratio_max"]))
