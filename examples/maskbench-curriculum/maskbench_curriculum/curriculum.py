"""``curriculum``: MAE with uniform random masks whose ratio rises linearly from ``ratio_start``
to ``mask_ratio`` over the first ``ramp_steps`` steps, then stays at ``mask_ratio``.

A method is a :class:`~pipeline_src.methods.MaskedAutoencoder` subclass that chooses the masks;
the base class encodes the visible tokens, decodes the masked ones and computes the loss. Keep
its contract (``python -m pipeline_src method check curriculum`` tests it):

- every random draw comes from ``generator``; draws indexed by position through
  ``self.position_noise`` (``self.random_mask`` does), so the method stays domain-agnostic;
- ``defaults`` lists every config key: the method's config when ``methods:`` has no entry for it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pipeline_src.batch import Batch
from pipeline_src.methods import MaskedAutoencoder


class CurriculumMasking(MaskedAutoencoder):
    display_name = "MAE (ratio curriculum)"   # the report's label
    domain_agnostic = True                    # SMA eq. 1: `method check` tests the claim
    defaults = {"mask_ratio": 0.5, "ratio_start": 0.15, "ramp_steps": 100}

    def ratio_at(self, step: int) -> float:
        start, end = float(self.cfg["ratio_start"]), float(self.cfg["mask_ratio"])
        ramp = max(int(self.cfg["ramp_steps"]), 1)
        return start + (end - start) * min(step, ramp) / ramp

    def make_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                  step: int) -> tuple[Tensor, dict[str, float]]:
        # `ratio` is the base class's per-sample ratio (mask_ratio): the end of the ramp
        ratio = torch.full_like(ratio, self.ratio_at(step))
        return self.random_mask(batch, ratio, generator), {"target_ratio": self.ratio_at(step)}
