"""Encoders: a pre-LN self-attention transformer and a Perceiver-IO encoder.

Both expose the same small surface the methods and the evaluation use:

* ``embed(batch) -> x_emb [B, N, D]``
* ``first_layer_logits(x_emb, padding_mask, query_idx=None) -> [B, H, Q, N]`` (SMA eq. 2), the
  logits of the first attention layer for all queries or only the rows ``query_idx [B, M]``;
* ``encode(batch, mask=None) -> Encoding(h, padding_mask)``: masked tokens (``mask`` True) get
  -inf before the first layer's softmax (SMA eq. 5) and never reach the output;
* ``pool(h, padding_mask) -> [B, D]`` the features for downstream evaluation.

``num_queries(n)`` is the number of first-layer queries (n for self-attention, the number of
latents for the Perceiver) and ``self_attention`` tells whether queries are input positions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..batch import Batch, InputSpec
from .attention import CrossAttentionBlock, SelfAttentionBlock, check_dropout
from .embeddings import InputEmbedding


class Encoding(NamedTuple):
    h: Tensor                    # [B, L, D] encoder output (visible tokens or latents)
    padding_mask: Tensor | None  # [B, L] True = not a real output token; None = all real


def gather_kept(x: Tensor, drop: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move the kept tokens of every sample to the front, in position order; zeros behind them.

    x: [B, N, D], drop: [B, N] bool -> (x_kept [B, V, D], pad [B, V] bool, idx [B, V] long)
    with V the largest number of kept tokens in the batch.
    """
    n_kept = (~drop).sum(1)                                          # [B]
    v = int(n_kept.max())
    idx = torch.argsort(drop.to(torch.uint8), dim=1, stable=True)[:, :v]  # [B, V]
    x_kept = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    pad = torch.arange(v, device=x.device) >= n_kept[:, None]        # [B, V]
    return x_kept.masked_fill(pad.unsqueeze(-1), 0.0), pad, idx      # no dropped content in pad slots


def masked_mean(h: Tensor, padding_mask: Tensor | None) -> Tensor:
    # h: [B, L, D] -> [B, D], mean over the positions where padding_mask is False
    if padding_mask is None:
        return h.mean(1)
    w = (~padding_mask).to(h.dtype).unsqueeze(-1)                    # [B, L, 1]
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


class TransformerEncoder(nn.Module):
    """Self-attention encoder (chemistry, HIGGS).

    With a mask, the masked tokens are keys at -inf in the first layer and their query rows are
    dropped after it (SMA §4.1). A query's output only depends on its own row and the keys it may
    attend to, so running the first layer on the visible tokens alone is the same computation;
    ``early_drop=True`` (the default) does that and saves the work on masked rows.
    """

    self_attention = True

    def __init__(self, spec: InputSpec, dim: int, depth: int, heads: int, mlp_ratio: float,
                 early_drop: bool = True, dropout: float = 0.0, pos_embedding: str = "learned") -> None:
        super().__init__()
        self.spec, self.dim, self.heads, self.early_drop = spec, dim, heads, early_drop
        self.embedding = InputEmbedding(spec, dim, pos_embedding)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def num_queries(self, n: int) -> int:
        return n

    def embed(self, batch: Batch) -> Tensor:
        return self.embedding(batch.x)                               # [B, N, D]

    def first_layer_logits(self, x_emb: Tensor, padding_mask: Tensor,
                           query_idx: Tensor | None = None) -> Tensor:
        # x_emb: [B, N, D]; query_idx: [B, M] positions -> [B, H, M, N] (M = N without query_idx)
        queries = x_emb if query_idx is None else torch.gather(
            x_emb, 1, query_idx.unsqueeze(-1).expand(-1, -1, x_emb.shape[-1]))
        return self.blocks[0].first_logits(x_emb, queries, padding_mask)

    def encode_embedded(self, x_emb: Tensor, padding_mask: Tensor, mask: Tensor | None = None) -> Encoding:
        # x_emb: [B, N, D]; padding_mask, mask: [B, N] bool
        if mask is None:
            x, pad = x_emb, padding_mask
            for blk in self.blocks:
                x = blk(x, pad)
            return Encoding(self.norm(x), pad)
        drop = padding_mask | mask
        if self.early_drop:
            x, pad, _ = gather_kept(x_emb, drop)                     # [B, V, D]
            for blk in self.blocks:
                x = blk(x, pad)
        else:                                                        # SMA eq. 5 literally
            x = self.blocks[0](x_emb, drop)                          # [B, N, D]
            x, pad, _ = gather_kept(x, drop)
            for blk in self.blocks[1:]:
                x = blk(x, pad)
        return Encoding(self.norm(x), pad)

    def encode(self, batch: Batch, mask: Tensor | None = None) -> Encoding:
        return self.encode_embedded(self.embed(batch), batch.padding_mask, mask)

    def pool(self, h: Tensor, padding_mask: Tensor | None) -> Tensor:
        return masked_mean(h, padding_mask)                          # [B, D]


class PerceiverEncoder(nn.Module):
    """Perceiver-IO encoder (proteins): latents cross-attend the inputs once, then self-attend."""

    self_attention = False

    def __init__(self, spec: InputSpec, dim: int, depth: int, heads: int, mlp_ratio: float,
                 num_latents: int, dropout: float = 0.0, pos_embedding: str = "learned") -> None:
        super().__init__()
        self.spec, self.dim, self.heads = spec, dim, heads
        self.embedding = InputEmbedding(spec, dim, pos_embedding)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)  # [L, D]
        self.cross = CrossAttentionBlock(dim, heads, mlp_ratio, dropout=dropout)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth - 1))
        self.norm = nn.LayerNorm(dim)

    def num_queries(self, n: int) -> int:
        return self.latents.shape[0]

    def embed(self, batch: Batch) -> Tensor:
        return self.embedding(batch.x)                               # [B, N, D]

    def _latents(self, b: int) -> Tensor:
        return self.latents.unsqueeze(0).expand(b, -1, -1)           # [B, L, D]

    def first_layer_logits(self, x_emb: Tensor, padding_mask: Tensor,
                           query_idx: Tensor | None = None) -> Tensor:
        # x_emb: [B, N, D]; query_idx: [B, M] latent ids -> [B, H, M, N] (M = L without query_idx)
        lat = self._latents(x_emb.shape[0])
        if query_idx is not None:
            lat = self.latents[query_idx]                            # [B, M, D]
        return self.cross.first_logits(x_emb, lat, padding_mask)

    def encode_embedded(self, x_emb: Tensor, padding_mask: Tensor, mask: Tensor | None = None) -> Encoding:
        drop = padding_mask if mask is None else padding_mask | mask
        x = self.cross(self._latents(x_emb.shape[0]), x_emb, drop)   # [B, L, D]
        for blk in self.blocks:
            x = blk(x)
        return Encoding(self.norm(x), None)

    def encode(self, batch: Batch, mask: Tensor | None = None) -> Encoding:
        return self.encode_embedded(self.embed(batch), batch.padding_mask, mask)

    def pool(self, h: Tensor, padding_mask: Tensor | None) -> Tensor:
        return masked_mean(h, padding_mask)                          # [B, D]


Encoder = TransformerEncoder | PerceiverEncoder


def model_dropout(model_cfg: dict[str, Any]) -> float:
    """``model_cfg["dropout"]`` (absent or null = 0), checked to lie in [0, 1]."""
    return check_dropout(model_cfg.get("dropout") or 0.0)


def decoder_dropout(model_cfg: dict[str, Any]) -> float:
    """``model_cfg["decoder_dropout"]`` (absent or null = the encoder's ``dropout``), in [0, 1]."""
    value = model_cfg.get("decoder_dropout")
    return model_dropout(model_cfg) if value is None else check_dropout(value)


def build_encoder(spec: InputSpec, model_cfg: dict[str, Any]) -> Encoder:
    """``model_cfg``: {arch: transformer|perceiver, dim, depth, heads, mlp_ratio, num_latents, dropout,
    pos_embedding, ...}. ``dropout`` (default 0): attention weights, attention output, MLP hidden
    layer and output. ``pos_embedding``: learned (default) | sincos (fixed, see :mod:`.embeddings`).

    The positional table has ``spec.max_len`` rows (the data decides n; ``model_cfg.max_len`` is
    what the data layer truncates to).
    """
    arch = model_cfg.get("arch", "transformer")
    common = dict(dim=int(model_cfg["dim"]), depth=int(model_cfg["depth"]),
                  heads=int(model_cfg["heads"]), mlp_ratio=float(model_cfg.get("mlp_ratio", 4)),
                  dropout=model_dropout(model_cfg), pos_embedding=str(model_cfg.get("pos_embedding", "learned")))
    if arch == "transformer":
        return TransformerEncoder(spec, **common)
    if arch == "perceiver":
        return PerceiverEncoder(spec, num_latents=int(model_cfg.get("num_latents", 64)), **common)
    raise ValueError(f"unknown encoder arch {arch!r} (transformer | perceiver)")
