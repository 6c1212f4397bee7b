"""Input embedding: token embedding + positional embedding, nothing else (DESIGN §4).

The positional table is learned (``pos_embedding: learned``, the default; SMA §3.3) or the fixed
1-D sine-cosine table (``pos_embedding: sincos``; MetaMAE appendix A), a buffer that no optimizer
step changes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..batch import InputSpec

POS_EMBEDDINGS = ("learned", "sincos")


def sincos_table(n: int, dim: int, base: float = 10000.0) -> Tensor:
    """Fixed positional table [n, dim]: row p is [sin(p w_0), ..., sin(p w_{h-1}), cos(p w_0), ...,
    cos(p w_{h-1})] with h = dim / 2 and w_i = base^(-i / h); computed in float64, returned in the
    default dtype."""
    if dim % 2:
        raise ValueError(f"pos_embedding 'sincos' needs an even model dim, got {dim}")
    half = dim // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) / half)            # [h]
    angle = torch.arange(n, dtype=torch.float64)[:, None] * freq[None, :]      # [n, h]
    return torch.cat([angle.sin(), angle.cos()], dim=1).to(torch.get_default_dtype())


class InputEmbedding(nn.Module):
    """XE + P (SMA §3.3): ``nn.Embedding`` for discrete ids, ``nn.Linear(d_raw, d)`` for values.

    ``pos`` [max_len, D] is learned from scratch (a parameter) or the fixed sine-cosine table (a
    buffer, saved with the weights); the decoders build their queries from it too, so it is the
    only part of the model that knows about token order.
    """

    def __init__(self, spec: InputSpec, dim: int, pos_embedding: str = "learned") -> None:
        super().__init__()
        if pos_embedding not in POS_EMBEDDINGS:
            raise ValueError(f"model pos_embedding {pos_embedding!r} unknown (known: {', '.join(POS_EMBEDDINGS)})")
        self.kind = spec.kind
        if spec.kind == "discrete":
            self.tok = nn.Embedding(spec.vocab_size, dim)
        else:
            self.tok = nn.Linear(spec.d_raw, dim)
        if pos_embedding == "learned":
            self.pos = nn.Parameter(torch.randn(spec.max_len, dim) * 0.02)
        else:
            self.register_buffer("pos", sincos_table(spec.max_len, dim))
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, N] ids or [B, N, d_raw] values -> [B, N, D]
        n = x.shape[1]
        return self.tok(x) + self.pos[:n]
