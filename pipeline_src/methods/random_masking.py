"""``random``: MAE with uniform random masks, exactly round(n_valid * mask_ratio) per sample."""
from __future__ import annotations

import torch
from torch import Tensor

from ..batch import Batch
from .base import MaskedAutoencoder


class RandomMasking(MaskedAutoencoder):
    display_name = "MAE (random)"
    defaults = {"mask_ratio": 0.3}

    def make_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                  step: int) -> tuple[Tensor, dict[str, float]]:
        return self.random_mask(batch, ratio, generator), {}
