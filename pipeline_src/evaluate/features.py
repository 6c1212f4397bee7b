"""Frozen-encoder features: one pooled vector per sample, computed once per (dataset, checkpoint)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.encode import Encoded


@torch.no_grad()
def extract_features(encoder: nn.Module, data: Encoded, max_len: int, batch_size: int = 256,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """Pooled encoder output for every sample of ``data``, in ``data`` order: [n, D] float32.

    Samples are batched by length (less padding); results are put back in input order.
    """
    encoder.eval().to(device)
    order = np.argsort(data.lengths(), kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = data.batch(idx, max_len).to(device)
        enc = encoder.encode(batch)
        z = encoder.pool(enc.h, enc.padding_mask).float().cpu().numpy()  # [b, D]
        if out is None:
            out = np.empty((len(data), z.shape[1]), dtype=np.float32)
        out[idx] = z
    if out is None:
        raise ValueError("no samples to encode")
    return out
