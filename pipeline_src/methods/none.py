"""``none``: no pretraining; downstream trains the freshly initialized encoder from scratch."""
from __future__ import annotations

import torch

from ..batch import Batch
from .base import Method, MethodOutput
from .registry import register


@register("none")
class NoPretraining(Method):
    defaults = {}

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> MethodOutput:
        raise RuntimeError("method 'none' has no pretraining step; use .encoder as initialized")
