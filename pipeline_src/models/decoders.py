"""Decoders that predict raw tokens at chosen positions, and the reconstruction loss.

Both decoders build their queries from the encoder's positional embedding P (SMA §4.2), so the
only order-aware parameter of the whole model stays the one table ``embedding.pos``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import InputSpec
from .attention import CrossAttentionBlock, SelfAttentionBlock


def out_dim(spec: InputSpec) -> int:
    return spec.vocab_size if spec.kind == "discrete" else spec.d_raw


class UpsampleDecoder(nn.Module):
    """SMA eq. 6: O = softmax(Q_o K_o^T / sqrt(d_k)) V_o with Q_o from P, K_o/V_o from H; MLP -> raw."""

    def __init__(self, spec: InputSpec, enc_dim: int, dim: int, heads: int, mlp_ratio: float = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.to_query = nn.Linear(enc_dim, dim)
        self.cross = CrossAttentionBlock(dim, heads, mlp_ratio, context_dim=enc_dim, dropout=dropout)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim(spec)))

    def forward(self, pos: Tensor, h: Tensor, h_padding_mask: Tensor | None,
                query_padding_mask: Tensor | None = None) -> Tensor:
        # pos: [B, M, D_enc] positional embeddings of the targets; h: [B, L, D_enc] -> [B, M, out]
        q = self.to_query(pos)                                      # [B, M, d]
        return self.head(self.cross(q, h, h_padding_mask))


class TransformerDecoder(nn.Module):
    """MetaMAE decoder g_phi: ``depth`` blocks of [self-attention over the position queries,
    cross-attention to the latent], then a linear head. Works on self-attention outputs and on
    Perceiver latents alike."""

    def __init__(self, spec: InputSpec, enc_dim: int, dim: int, heads: int, depth: int,
                 mlp_ratio: float = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.to_query = nn.Linear(enc_dim, dim)
        self.self_blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.cross_blocks = nn.ModuleList(
            CrossAttentionBlock(dim, heads, mlp_ratio, context_dim=enc_dim, dropout=dropout) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim(spec)))

    def forward(self, pos: Tensor, h: Tensor, h_padding_mask: Tensor | None,
                query_padding_mask: Tensor | None = None) -> Tensor:
        # pos: [B, M, D_enc]; h: [B, L, D_enc] -> [B, M, out]
        x = self.to_query(pos)
        for sa, ca in zip(self.self_blocks, self.cross_blocks):
            x = ca(sa(x, query_padding_mask), h, h_padding_mask)
        return self.head(x)


class SelfAttentionDecoder(nn.Module):
    """MetaMAE Table 7's decoder as MAE builds it: ``depth`` self-attention blocks over every
    target position, each holding its visible token's latent (projected to the decoder width) or a
    learned mask token, plus its position query (from P, as the other decoders), then a linear head.

    ``slot`` [B, M] tells which latent row a target position holds (-1: a masked position, the
    mask token). Needs one latent row per visible token (a self-attention encoder, not Perceiver
    latents)."""

    def __init__(self, spec: InputSpec, enc_dim: int, dim: int, heads: int, depth: int,
                 mlp_ratio: float = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.to_query = nn.Linear(enc_dim, dim)
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim(spec)))

    def forward(self, pos: Tensor, h: Tensor, h_padding_mask: Tensor | None,
                query_padding_mask: Tensor | None = None, slot: Tensor | None = None) -> Tensor:
        # pos: [B, M, D_enc]; h: [B, V, D_enc] visible latents; slot: [B, M] -> [B, M, out]
        if slot is None:
            raise ValueError("SelfAttentionDecoder needs the slot of every target position")
        held = gather_tokens(h, slot.clamp(min=0))                  # [B, M, D_enc]
        x = torch.where((slot >= 0).unsqueeze(-1), self.embed(held), self.mask_token.to(held.dtype))
        x = x + self.to_query(pos)
        for blk in self.blocks:
            x = blk(x, query_padding_mask)
        return self.head(x)


def token_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-token loss, no reduction. pred: [B, M, V] or [B, M, d_raw]; target: [B, M](, d_raw) -> [B, M]."""
    if kind == "discrete":
        return F.cross_entropy(pred.transpose(1, 2), target, reduction="none")
    return F.mse_loss(pred, target.to(pred.dtype), reduction="none").mean(-1)


def reconstruction_loss(pred: Tensor, target: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Mean of the per-token loss over ``valid [B, M]`` (cross-entropy or MSE, SMA §4.2)."""
    w = valid.to(pred.dtype)
    return (token_loss(pred, target, kind) * w).sum() / w.sum().clamp(min=1.0)


def per_sample_loss(pred: Tensor, target: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Per-sample mean over ``valid`` tokens: [B]."""
    w = valid.to(pred.dtype)
    return (token_loss(pred, target, kind) * w).sum(1) / w.sum(1).clamp(min=1.0)


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x: [B, N] or [B, N, d]; idx: [B, M] -> [B, M] or [B, M, d]."""
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


__all__ = ["UpsampleDecoder", "TransformerDecoder", "SelfAttentionDecoder", "token_loss", "reconstruction_loss",
           "per_sample_loss", "gather_tokens", "out_dim"]
