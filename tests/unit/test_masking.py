"""Mask helpers and SMA's select_mask against a slow per-sample reference."""
from __future__ import annotations


import math

import pytest
import torch

from pipeline_src.methods.masking import num_masked, random_mask, rank_mask, span_mask
from pipeline_src.methods.sma import mask_from_logits, select_mask



def _padding(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]  # [B, N]


def _expected_k(n: int, r: float) -> int:
    return min(max(math.floor(n * r + 0.5), 1), max(n - 1, 0))


def test_num_masked_rounds_half_up_and_keeps_one_visible() -> None:
    n = torch.tensor([10, 5, 7, 1, 2, 100])
    assert num_masked(n, 0.3).tolist() == [3, 2, 2, 0, 1, 30]
    assert num_masked(n, torch.tensor([0.0, 1.0, 0.5, 0.5, 0.9, 0.015625], dtype=torch.float64)).tolist() == [1, 4, 4, 0, 1, 2]


def test_rank_mask_per_sample_k() -> None:
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    excluded = torch.tensor([[False, True, False, False], [False, False, False, False]])
    m = rank_mask(score, excluded, torch.tensor([2, 1]))
    assert m.tolist() == [[False, False, True, True], [True, False, False, False]]


@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.5])
def test_random_and_span_masks_exact_count_never_padding(ratio: float) -> None:
    g = torch.Generator().manual_seed(0)
    lengths = [40, 3, 17, 64, 2, 33]
    pad = _padding(lengths, 64)
    k = num_masked((~pad).sum(1), ratio)
    masks = [random_mask(torch.rand(6, 64, generator=g), pad, k),
             span_mask(torch.rand(6, 64, generator=g), torch.rand(6, 64, generator=g), pad, k, 3)]
    for m in masks:
        assert not (m & pad).any()
        assert m.sum(1).tolist() == [_expected_k(n, ratio) for n in lengths]


def test_span_mask_makes_runs() -> None:
    g = torch.Generator().manual_seed(1)
    pad = torch.zeros(64, 200, dtype=torch.bool)
    k = num_masked((~pad).sum(1), 0.3)
    m = span_mask(torch.rand(64, 200, generator=g), torch.rand(64, 200, generator=g), pad, k, 5)
    runs = (m[:, 1:] & ~m[:, :-1]).sum() + m[:, 0].sum()             # number of masked runs
    mean_run = m.sum() / runs
    assert 3.0 < float(mean_run) < 8.0
    r = random_mask(torch.rand(64, 200, generator=g), pad, k)
    assert float(r.sum() / ((r[:, 1:] & ~r[:, :-1]).sum() + r[:, 0].sum())) < 2.0


def reference_select_mask(logits: torch.Tensor, kpm: torch.Tensor, ratio: float | torch.Tensor,
                          num_per_query: float, noise: torch.Tensor, qpm: torch.Tensor | None) -> torch.Tensor:
    """Per-sample loop, written from SMA eq. 3-5 directly."""
    b_size, _, q_size, n_size = logits.shape
    out = torch.zeros(b_size, n_size, dtype=torch.bool)
    for b in range(b_size):
        keys = (~kpm[b]).nonzero().flatten()
        n = len(keys)
        r = float(ratio[b]) if isinstance(ratio, torch.Tensor) else ratio
        k = _expected_k(n, r)
        queries = torch.arange(q_size) if qpm is None else (~qpm[b]).nonzero().flatten()
        m = min(max(math.floor(n * r / num_per_query + 0.5), 1), len(queries))
        chosen = queries[torch.argsort(noise[b, queries], stable=True)[:m]]
        attn = torch.softmax(logits[b][:, :, keys], dim=-1).sum(0)      # [Q, n] summed over heads
        score = attn[chosen].sum(0)                                   # [n]
        out[b, keys[torch.topk(score, k).indices]] = True
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("self_attention", [True, False])
def test_select_mask_matches_reference(seed: int, self_attention: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    b, h, n = 7, 3, 50
    q = n if self_attention else 16
    lengths = torch.randint(2, n + 1, (b,), generator=g).tolist()
    kpm = _padding(lengths, n)
    logits = torch.randn(b, h, q, n, generator=g, dtype=torch.float64) * 3
    ratio: float | torch.Tensor = 0.3 if seed % 2 == 0 else 0.1 + 0.6 * torch.rand(b, generator=g, dtype=torch.float64)
    qpm = kpm if self_attention else None
    state = g.get_state()
    got = select_mask(logits, kpm, ratio, 4, g, query_padding_mask=qpm)
    g.set_state(state)
    noise = torch.rand(b, q, generator=g)                              # the draw select_mask made
    want = reference_select_mask(logits, kpm, ratio, 4, noise, qpm)
    assert torch.equal(got, want)
    assert not (got & kpm).any()
    ratios = ratio if isinstance(ratio, torch.Tensor) else [ratio] * b
    assert got.sum(1).tolist() == [_expected_k(n_, float(r)) for n_, r in zip(lengths, ratios)]


def test_select_mask_ignores_padded_logits() -> None:
    g = torch.Generator().manual_seed(0)
    kpm = _padding([5, 8], 8)
    logits = torch.randn(2, 2, 8, 8, generator=g)
    logits2 = logits.clone()
    logits2[0, :, :, 5:] = 1e4                                         # garbage at padded keys
    a = select_mask(logits, kpm, 0.4, 1, torch.Generator().manual_seed(3), query_padding_mask=kpm)
    b = select_mask(logits2, kpm, 0.4, 1, torch.Generator().manual_seed(3), query_padding_mask=kpm)
    assert torch.equal(a, b)


# --- mixed precision ------------------------------------------------------------------------

def test_mask_scores_are_float32_under_bf16_autocast() -> None:
    """bf16 logits whose softmax values differ below bf16 resolution (2^-9 against spacing 2^-7):
    in fp32 key 7 scores highest; bf16 scores would tie and the stable sort would pick key 0."""
    logits = torch.zeros(2, 1, 1, 8, dtype=torch.bfloat16)
    logits[0, 0, 0, 7] = 2.0 ** -9
    logits[1, 0, 0, 3] = 2.0 ** -9
    kpm = torch.zeros(2, 8, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask = mask_from_logits(logits.clone(), torch.ones(2, 1, dtype=torch.bool), kpm, torch.tensor([1, 1]))
    assert mask.nonzero().tolist() == [[0, 7], [1, 3]]


@pytest.mark.parametrize("self_attention", [True, False])
def test_select_mask_bf16_logits_match_fp32_when_separated(self_attention: bool) -> None:
    """Logits rounded to bf16 under autocast give the fp32 masks when the key scores are well
    apart (neighbouring keys 6 % apart here, bf16 rounding below 1 %)."""
    g = torch.Generator().manual_seed(0)
    b, h, n = 6, 3, 50
    q = n if self_attention else 16
    kpm = _padding(torch.randint(10, n + 1, (b,), generator=g).tolist(), n)
    level = torch.stack([torch.randperm(n, generator=g) for _ in range(b)]).float() * (3.0 / n)  # [B, N]
    logits = level[:, None, None, :] + 0.01 * torch.randn(b, h, q, n, generator=g)
    qpm = kpm if self_attention else None
    want = select_mask(logits, kpm, 0.3, 4, torch.Generator().manual_seed(1), query_padding_mask=qpm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = select_mask(logits.bfloat16(), kpm, 0.3, 4, torch.Generator().manual_seed(1), query_padding_mask=qpm)
    assert torch.equal(got, want)
