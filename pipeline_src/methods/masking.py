"""Vectorized, padding-aware mask helpers shared by the methods.

Conventions: ``padding_mask [B, N]`` True = padding; a returned mask [B, N] is True where a
token is masked (hidden from the encoder, predicted by the decoder). Never a padding position.
"""
from __future__ import annotations

import torch
from torch import Tensor


def num_masked(n_valid: Tensor, ratio: float | Tensor) -> Tensor:
    """round(n_valid * ratio) per sample (half up), kept in [1, n_valid - 1] so that every sample
    has at least one masked and one visible token (0 when n_valid < 2). n_valid: [B] -> [B] long."""
    r = torch.as_tensor(ratio, dtype=torch.float64, device=n_valid.device)
    k = torch.floor(n_valid.to(torch.float64) * r + 0.5).long()
    return torch.minimum(k.clamp(min=1), (n_valid - 1).clamp(min=0))


def rank_mask(score: Tensor, excluded: Tensor, k: Tensor, largest: bool = True) -> Tensor:
    """Per-sample top-k with a different k per sample: sort once, compare ranks.

    score: [B, N]; excluded: [B, N] bool (never chosen); k: [B] long -> bool [B, N].
    Ties are broken by position (stable sort).
    """
    fill = float("-inf") if largest else float("inf")
    order = torch.argsort(score.masked_fill(excluded, fill), dim=1, descending=largest, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return (ranks < k[:, None]) & ~excluded


def random_mask(noise: Tensor, padding_mask: Tensor, k: Tensor) -> Tensor:
    """Uniform random mask: the k valid positions with the smallest noise. noise: [B, N]."""
    return rank_mask(noise, padding_mask, k, largest=False)


def span_mask(boundary_noise: Tensor, segment_noise: Tensor, padding_mask: Tensor, k: Tensor,
              mean_span: float) -> Tensor:
    """Contiguous spans (a domain prior: neighbours in index order belong together).

    A segment starts at position i when ``boundary_noise[:, i] < 1 / mean_span`` (geometric lengths
    with mean ``mean_span``); every segment gets the score ``segment_noise[:, segment_id]`` and
    whole segments are masked in score order until k tokens are masked; the last one is cut from
    its start, so every masked run is contiguous. boundary_noise, segment_noise: [B, N].
    """
    start = boundary_noise < 1.0 / max(float(mean_span), 1.0)
    start[:, 0] = True
    seg = torch.cumsum(start.long(), dim=1) - 1                     # [B, N] segment id
    score = torch.gather(segment_noise, 1, seg)                     # equal within a segment
    return rank_mask(score, padding_mask, k, largest=False)
