"""``sma_r2``: SMA's guided masks at a per-sample ratio drawn as in R2MAE (a new combination)."""
from __future__ import annotations

import torch
from torch import Tensor

from .r2mae import uniform_ratio
from .sma import SMA


class SMAR2(SMA):
    display_name = "SMA+R2MAE"
    guided_masks = True
    defaults = {"ratio_min": 0.15, "ratio_max": 0.6, "num_per_query": 4, "warmup_steps": 0, "warmup_style": "per_sample"}

    def sample_ratio(self, batch_size: int, generator: torch.Generator | None,
                     device: torch.device) -> Tensor:
        u = self.uniform((batch_size,), generator, device)
        return uniform_ratio(u, float(self.cfg["ratio_min"]), float(self.cfg["ratio_max"]))
