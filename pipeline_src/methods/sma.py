"""``sma``: Self-Guided Masked Autoencoders (Xie et al., ICLR 2024, §4).

Mask selection (eq. 3-5), vectorized over the batch and padding-aware:

1. choose a random subset R of about round(n_valid * r / num_per_query) first-layer queries per
   sample (valid positions for self-attention, latents for the Perceiver): the queries with the
   smallest ``query_noise``;
2. softmax the logits of those rows only, per head, over the valid keys; sum over heads and
   over the chosen rows -> one score per key;
3. mask the top round(n_valid * r) valid keys (per-sample k: one sort + rank comparison).

Warm-up over the first ``warmup_steps`` steps, two ways (``warmup_style``):

- ``per_sample`` (default): each sample's mask is the guided one with probability
  step / warmup_steps, else a uniform random one;
- ``mixed`` (as SMA's released code does it): every mask mixes a random part into the guided
  one; the random share is rho(t) = (1 + cos(pi t / warmup_steps)) / 2, from 1 at step 0 to 0 at
  the end of the warm-up. Of a sample's k masked tokens, the k - round(rho k) highest-scoring keys
  are guided and the remaining round(rho k) are drawn uniformly from the other valid keys.

The masked keys then get -inf before the first layer's softmax and are dropped after it, so no
information flows from them (the encoder's ``encode_embedded(..., mask)``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..batch import Batch, InputSpec
from ..models.attention import full_precision, score_dtype
from .base import MaskedAutoencoder
from .masking import num_masked, random_mask, rank_mask


WARMUP_STYLES = ("per_sample", "mixed")


def random_share(step: int, warmup_steps: int, k: Tensor) -> Tensor:
    """Masked tokens drawn at random at ``step`` of a ``mixed`` warm-up: round(rho k), half up, with
    rho = (1 + cos(pi step / warmup_steps)) / 2 (0 from ``warmup_steps`` on). k: [B] -> [B] long."""
    if step >= warmup_steps:
        return torch.zeros_like(k)
    rho = 0.5 * (1.0 + math.cos(math.pi * step / warmup_steps))
    return torch.floor(k.to(torch.float64) * rho + 0.5).long()


def num_queries(n_valid: Tensor, ratio: float | Tensor, num_per_query: float, n_available: Tensor) -> Tensor:
    """round(n_valid * ratio / num_per_query) (half up), in [1, n_available]. -> [B] long."""
    r = torch.as_tensor(ratio, dtype=torch.float64, device=n_valid.device)
    m = torch.floor(n_valid.to(torch.float64) * r / float(num_per_query) + 0.5).long().clamp(min=1)
    return torch.minimum(m, n_available)


def choose_queries(query_noise: Tensor, query_padding_mask: Tensor | None, m: Tensor) -> tuple[Tensor, Tensor]:
    """The m[b] valid queries with the smallest noise. query_noise: [B, Q] -> (idx [B, M], valid [B, M])."""
    noise = query_noise if query_padding_mask is None else query_noise.masked_fill(query_padding_mask, float("inf"))
    order = torch.argsort(noise, dim=1, stable=True)
    big_m = max(int(m.max()), 1)
    valid = torch.arange(big_m, device=m.device) < m[:, None]
    return order[:, :big_m], valid


@torch.no_grad()
def mask_from_logits(logits: Tensor, query_valid: Tensor, key_padding_mask: Tensor, k: Tensor) -> Tensor:
    """logits: [B, H, M, N] rows of the chosen queries (overwritten when already float32 or
    float64: pass a tensor you own); query_valid: [B, M]; k: [B] -> bool [B, N].

    The softmax and the sums run in float32 (float64 stays float64) whatever the autocast: in
    bf16 the scores of a long sequence take a few dozen distinct values, and the ties would be
    broken by position (SMA eq. 1 would not hold).
    """
    b, h, m, n = logits.shape
    with full_precision(logits):
        logits = logits.to(score_dtype(logits))
        logits = logits.masked_fill_(key_padding_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1, out=logits)              # per head, over valid keys
        w = query_valid.to(attn.dtype)[:, None, :].expand(b, h, m).reshape(b, 1, h * m)
        score = torch.bmm(w, attn.view(b, h * m, n)).squeeze(1)       # [B, N] sum over heads, rows
    return rank_mask(score, key_padding_mask, k, largest=True)


def gather_rows(logits: Tensor, idx: Tensor) -> Tensor:
    """logits: [B, H, Q, N], idx: [B, M] -> a new contiguous [B, H, M, N] (rows idx of every head)."""
    b, h, q, n = logits.shape
    base = (torch.arange(b, device=idx.device)[:, None] * h + torch.arange(h, device=idx.device)) * q
    rows = (base[:, :, None] + idx[:, None, :]).reshape(-1)            # [B*H*M] flat row ids
    return logits.reshape(b * h * q, n).index_select(0, rows).view(b, h, idx.shape[1], n)


@torch.no_grad()
def select_mask(attn_logits: Tensor, key_padding_mask: Tensor, ratio: float | Tensor, num_per_query: float,
                generator: torch.Generator | None = None, *, query_padding_mask: Tensor | None = None,
                query_noise: Tensor | None = None) -> Tensor:
    """SMA masks from first-layer attention logits (eq. 5's AttentionMask).

    attn_logits: [B, H, Q, N]; key_padding_mask: [B, N] (True = pad); ratio: float or [B];
    query_padding_mask: [B, Q], pass ``key_padding_mask`` for self-attention (None = all queries
    valid, the Perceiver case); query_noise: [B, Q] uniform, drawn from ``generator`` when None.
    Returns bool [B, N], True = masked; exactly ``num_masked(n_valid, ratio)`` per sample.
    """
    b, _, q, _ = attn_logits.shape
    if query_noise is None:
        query_noise = torch.rand(b, q, generator=generator, device=attn_logits.device)
    n_valid = (~key_padding_mask).sum(1)
    n_avail = (torch.full_like(n_valid, q) if query_padding_mask is None
               else (~query_padding_mask).sum(1))
    idx, valid = choose_queries(query_noise, query_padding_mask, num_queries(n_valid, ratio, num_per_query, n_avail))
    rows = gather_rows(attn_logits, idx)                               # [B, H, M, N], a copy
    return mask_from_logits(rows, valid, key_padding_mask, num_masked(n_valid, ratio))


class SMA(MaskedAutoencoder):
    display_name = "SMA"
    guided_masks = True
    defaults = {"mask_ratio": 0.3, "num_per_query": 4, "warmup_steps": 0, "warmup_style": "per_sample"}

    def __init__(self, spec: InputSpec, model_cfg: dict, method_cfg: dict) -> None:
        super().__init__(spec, model_cfg, method_cfg)
        if self.cfg["warmup_style"] not in WARMUP_STYLES:
            raise ValueError(f"method {self.name!r}: warmup_style {self.cfg['warmup_style']!r} unknown "
                             f"(known: {', '.join(WARMUP_STYLES)})")

    @torch.no_grad()
    def guided_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                    k: Tensor | None = None) -> Tensor:
        """Same result as ``select_mask`` on the full first-layer logits, but only the chosen
        queries' logits are computed. ``k`` [B]: mask this many top keys instead of
        ``num_masked(n_valid, ratio)`` (the queries are still chosen for ``ratio``)."""
        enc, pad = self.encoder, batch.padding_mask
        b, n = pad.shape
        n_valid = (~pad).sum(1)
        if enc.self_attention:                                        # queries are positions
            noise, qpad, n_avail = self.position_noise(b, n, generator, pad.device), pad, n_valid
        else:                                                         # queries are latents
            big_l = enc.num_queries(n)
            noise, qpad = self.uniform((b, big_l), generator, pad.device), None
            n_avail = torch.full_like(n_valid, big_l)
        m = num_queries(n_valid, ratio, float(self.cfg["num_per_query"]), n_avail)
        idx, valid = choose_queries(noise, qpad, m)                   # [B, M]
        logits = enc.first_layer_logits(x_emb.detach(), pad, idx)     # [B, H, M, N]
        return mask_from_logits(logits, valid, pad, num_masked(n_valid, ratio) if k is None else k)

    def make_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                  step: int) -> tuple[Tensor, dict[str, float]]:
        warmup = int(self.cfg.get("warmup_steps", 0) or 0)
        if step < warmup and self.cfg["warmup_style"] == "mixed":
            k = num_masked(batch.n_valid, ratio)                          # [B]
            k_random = random_share(step, warmup, k)
            guided = self.guided_mask(batch, x_emb, ratio, generator, k - k_random)
            noise = self.position_noise(*guided.shape, generator, guided.device)
            mask = guided | random_mask(noise, batch.padding_mask | guided, k_random)
            return mask, {"guided_fraction": float(1.0 - k_random.sum() / k.sum().clamp(min=1))}
        mask = self.guided_mask(batch, x_emb, ratio, generator)
        if step >= warmup:
            return mask, {"guided_fraction": 1.0}
        # warm-up: each sample uses the guided mask with probability step / warmup_steps
        b = mask.shape[0]
        use_guided = self.uniform((b,), generator, mask.device) < step / warmup
        mask = torch.where(use_guided[:, None], mask, self.random_mask(batch, ratio, generator))
        return mask, {"guided_fraction": float(use_guided.float().mean())}

