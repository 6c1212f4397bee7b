"""``none``: no pretraining; downstream trains the freshly initialized encoder from scratch."""
from __future__ import annotations

import torch

from ..batch import Batch
from .base import Method, MethodOutput


class NoPretraining(Method):
    display_name = "no pretraining"
    defaults = {}

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> MethodOutput:
        raise RuntimeError("method 'none' has no pretraining step; use .encoder as initialized")
