"""Input embedding: token embedding + learned positional embedding, nothing else (DESIGN §4)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..batch import InputSpec


class InputEmbedding(nn.Module):
    """XE + P (SMA §3.3): ``nn.Embedding`` for discrete ids, ``nn.Linear(d_raw, d)`` for values.

    ``pos`` [max_len, D] is learned from scratch; the decoders build their queries from it too,
    so it is the only parameter that knows about token order.
    """

    def __init__(self, spec: InputSpec, dim: int) -> None:
        super().__init__()
        self.kind = spec.kind
        if spec.kind == "discrete":
            self.tok = nn.Embedding(spec.vocab_size, dim)
        else:
            self.tok = nn.Linear(spec.d_raw, dim)
        self.pos = nn.Parameter(torch.randn(spec.max_len, dim) * 0.02)
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, N] ids or [B, N, d_raw] values -> [B, N, D]
        n = x.shape[1]
        return self.tok(x) + self.pos[:n]
