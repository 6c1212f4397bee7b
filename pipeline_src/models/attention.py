"""Attention and transformer blocks.

Every block runs on ``F.scaled_dot_product_attention``; the only place where raw attention
logits are materialized is :meth:`Attention.logits`, which the guided-masking methods call on the
first layer (SMA eq. 2) for a handful of chosen queries.

Masks follow one convention throughout: a boolean ``key_padding_mask [B, N]`` is True where a key
must be ignored (padding, or a masked token); it becomes -inf before the softmax.

Dropout (``dropout`` = p, off by default) acts on the attention weights, on the attention output
and on the MLP's hidden layer and output, in training mode only. It is functional (no module of
its own), so parameter names are the same with and without it, and p = 0 runs exactly the code
path of a model without dropout.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def attend_mask(key_padding_mask: Tensor | None) -> Tensor | None:
    """[B, N] True = ignore  ->  [B, 1, 1, N] True = attend (the SDPA convention)."""
    if key_padding_mask is None:
        return None
    return rearrange(~key_padding_mask, "b n -> b 1 1 n")


def check_dropout(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"model.dropout must be in [0, 1], got {p}")
    return p


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout, but the identity (the same tensor, no random draw) when p = 0 or in eval mode."""
    return F.dropout(x, p, True) if training and p > 0 else x


def score_dtype(t: Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 tensors, float64 stays float64: the dtype mask scores use."""
    return torch.promote_types(t.dtype, torch.float32)


def full_precision(t: Tensor) -> ContextManager:
    """Autocast off on ``t``'s device: ops inside run in the dtype of their inputs."""
    if t.device.type in ("cpu", "cuda"):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} not divisible by heads {heads}"
        self.heads, self.dim_head = heads, dim // heads
        self.p = check_dropout(dropout)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, Q, D]  context: [B, N, Dc]  key_padding_mask: [B, N]
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b q (h d) -> b h q d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        p = self.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend_mask(key_padding_mask), dropout_p=p)
        return dropout(self.to_out(rearrange(out, "b h q d -> b q (h d)")), self.p, self.training)  # [B, Q, D]

    def logits(self, x: Tensor, context: Tensor | None = None,
               key_padding_mask: Tensor | None = None) -> Tensor:
        """Unnormalized attention A = Q K^T / sqrt(d_k) (SMA eq. 2), -inf at masked keys.

        x: [B, Q, D] the queries to score (a subset is fine); context: [B, N, Dc] -> [B, H, Q, N]
        in float32 (float64 for float64 inputs) whatever the autocast: the query projection runs
        as in the layer, the products with the keys in full precision, so that scores do not tie
        from rounding (bf16 has 8 significant bits).

        Few queries (H * Q <= D, the masking case): the key projection is folded into the queries,
        A = (Q W_k^T) C^T + Q b_k, one [B, H*Q, Dc] x [B, Dc, N] product instead of projecting every
        key. Many queries: project the keys (in the autocast dtype, as the layer does), then Q K^T.
        """
        context = x if context is None else context
        b, nq, _ = x.shape
        h, dh = self.heads, self.dim_head
        q = self.to_q(x)                                             # [B, Q, D], autocast dtype
        w, bias = self._k_params()                                   # [D, Dc], [D]
        fold = h * nq <= w.shape[0]
        k = None if fold else F.linear(context, w, bias)             # [B, N, D]
        dtype = score_dtype(q)
        with full_precision(q):
            q = q.to(dtype).view(b, nq, h, dh).transpose(1, 2) * dh ** -0.5  # [B, H, Q, dh]
            if fold:
                u = torch.einsum("bhqd,hdc->bhqc", q, w.to(dtype).view(h, dh, -1))  # [B, H, Q, Dc]
                c = torch.einsum("bhqd,hd->bhq", q, bias.to(dtype).view(h, dh))     # [B, H, Q]
                a = torch.baddbmm(c.reshape(b, h * nq, 1), u.reshape(b, h * nq, -1),
                                  context.to(dtype).transpose(1, 2))                # [B, H*Q, N]
                a = a.view(b, h, nq, -1)
            else:
                k = rearrange(k.to(dtype), "b n (h d) -> b h n d", h=h)
                a = torch.einsum("bhqd,bhnd->bhqn", q, k)
        if key_padding_mask is not None:
            a = a.masked_fill_(rearrange(key_padding_mask, "b n -> b 1 1 n"), float("-inf"))
        return a

    def _k_params(self) -> tuple[Tensor, Tensor]:
        dim = self.heads * self.dim_head  # the key half of to_kv only
        return self.to_kv.weight[:dim], self.to_kv.bias[:dim]


class FeedForward(nn.Sequential):
    """Linear -> GELU -> Linear, dropout after the GELU and after the output (training only).
    Parameter names ``0.*``, ``2.*`` as in a plain ``nn.Sequential`` of the three layers."""

    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.p = check_dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        fc1, act, fc2 = self[0], self[1], self[2]
        return dropout(fc2(dropout(act(fc1(x)), self.p, self.training)), self.p, self.training)


class SelfAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, dropout=dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, N, D]
        x = x + self.attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.mlp(self.norm2(x))

    def first_logits(self, x: Tensor, queries: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        # x: [B, N, D] block input; queries: [B, Q, D] rows of x to score -> [B, H, Q, N]
        return self.attn.logits(self.norm1(queries), self.norm1(x), key_padding_mask)


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention: latents + Attn(LN(latents), LN(context)), then + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.norm_q, self.norm_ctx = nn.LayerNorm(dim), nn.LayerNorm(context_dim)
        self.attn = Attention(dim, heads, context_dim, dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, context: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, Q, D] queries  context: [B, N, Dc]
        x = x + self.attn(self.norm_q(x), self.norm_ctx(context), key_padding_mask)
        return x + self.mlp(self.norm2(x))

    def first_logits(self, context: Tensor, queries: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        # context: [B, N, Dc]; queries: [B, Q, D] -> [B, H, Q, N]
        return self.attn.logits(self.norm_q(queries), self.norm_ctx(context), key_padding_mask)
