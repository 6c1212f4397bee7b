"""``span``: contiguous random spans, a domain-specific baseline (assumes index order matters)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..batch import Batch
from .base import MaskedAutoencoder
from .masking import num_masked, span_mask


class SpanMasking(MaskedAutoencoder):
    display_name = "span masking (not domain-agnostic)"
    domain_agnostic = False
    defaults = {"mask_ratio": 0.3, "mean_span": 3}

    def make_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                  step: int) -> tuple[Tensor, dict[str, float]]:
        b, n = batch.padding_mask.shape
        dev = batch.padding_mask.device
        boundary = self.position_noise(b, n, generator, dev)
        segment = self.position_noise(b, n, generator, dev)
        k = num_masked(batch.n_valid, ratio)
        return span_mask(boundary, segment, batch.padding_mask, k, float(self.cfg["mean_span"])), {}
