"""Attention and transformer blocks.

Every block runs on ``F.scaled_dot_product_attention``; the only place where raw attention
logits are materialized is :meth:`Attention.logits`, which the guided-masking methods call on the
first layer (SMA eq. 2) for a handful of chosen queries.

Masks follow one convention throughout: a boolean ``key_padding_mask [B, N]`` is True where a key
must be ignored (padding, or a masked token); it becomes -inf before the softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def attend_mask(key_padding_mask: Tensor | None) -> Tensor | None:
    """[B, N] True = ignore  ->  [B, 1, 1, N] True = attend (the SDPA convention)."""
    if key_padding_mask is None:
        return None
    return rearrange(~key_padding_mask, "b n -> b 1 1 n")


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} not divisible by heads {heads}"
        self.heads, self.dim_head = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, Q, D]  context: [B, N, Dc]  key_padding_mask: [B, N]
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b q (h d) -> b h q d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend_mask(key_padding_mask))
        return self.to_out(rearrange(out, "b h q d -> b q (h d)"))  # [B, Q, D]

    def logits(self, x: Tensor, context: Tensor | None = None,
               key_padding_mask: Tensor | None = None) -> Tensor:
        """Unnormalized attention A = Q K^T / sqrt(d_k) (SMA eq. 2), -inf at masked keys.

        x: [B, Q, D] the queries to score (a subset is fine); context: [B, N, Dc] -> [B, H, Q, N]
        """
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b q (h d) -> b h q d", h=self.heads)
        k = rearrange(F.linear(context, *self._k_params()), "b n (h d) -> b h n d", h=self.heads)
        a = torch.einsum("bhqd,bhnd->bhqn", q, k) * self.dim_head ** -0.5
        if key_padding_mask is not None:
            a = a.masked_fill(rearrange(key_padding_mask, "b n -> b 1 1 n"), float("-inf"))
        return a

    def _k_params(self) -> tuple[Tensor, Tensor]:
        dim = self.heads * self.dim_head  # the key half of to_kv only
        return self.to_kv.weight[:dim], self.to_kv.bias[:dim]


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class SelfAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, N, D]
        x = x + self.attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.mlp(self.norm2(x))

    def first_logits(self, x: Tensor, queries: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        # x: [B, N, D] block input; queries: [B, Q, D] rows of x to score -> [B, H, Q, N]
        return self.attn.logits(self.norm1(queries), self.norm1(x), key_padding_mask)


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention: latents + Attn(LN(latents), LN(context)), then + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None = None) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.norm_q, self.norm_ctx = nn.LayerNorm(dim), nn.LayerNorm(context_dim)
        self.attn = Attention(dim, heads, context_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio)

    def forward(self, x: Tensor, context: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        # x: [B, Q, D] queries  context: [B, N, Dc]
        x = x + self.attn(self.norm_q(x), self.norm_ctx(context), key_padding_mask)
        return x + self.mlp(self.norm2(x))

    def first_logits(self, context: Tensor, queries: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        # context: [B, N, Dc]; queries: [B, Q, D] -> [B, H, Q, N]
        return self.attn.logits(self.norm_q(queries), self.norm_ctx(context), key_padding_mask)
