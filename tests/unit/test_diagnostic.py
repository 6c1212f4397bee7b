"""The held-out diagnostic (pipeline_src/train/diagnostic.py): rows, baseline, masks and loss, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline_src.data.encode import Encoded
from pipeline_src.methods.masking import num_masked
from pipeline_src.train.diagnostic import frequency_baseline, heldout_indices, heldout_loss, heldout_masks


def _corpus(lengths: list[int], seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(65, 90, size=sum(lengths)).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Encoded("discrete", np.array([str(i) for i in range(len(lengths))]), tokens=tokens, offsets=offsets)


def test_heldout_rows_are_fixed_disjoint_and_capped() -> None:
    held, rest = heldout_indices(100, 50)
    assert len(held) == 10 and len(rest) == 90                      # capped at a tenth
    assert sorted(np.concatenate([held, rest]).tolist()) == list(range(100))
    again, _ = heldout_indices(100, 50)
    assert held.tolist() == again.tolist()
    few = heldout_indices(1000, 5)[0]
    assert len(few) == 5 and few.tolist() == sorted(few.tolist())


def test_frequency_baseline_by_hand() -> None:
    two = Encoded("discrete", np.array(["a", "b"]), tokens=np.array([1, 1, 2, 2], np.uint8),
                  offsets=np.array([0, 2, 4]))
    assert math.isclose(frequency_baseline(two), math.log(2))
    skew = Encoded("discrete", np.array(["a"]), tokens=np.array([1, 1, 1, 2], np.uint8), offsets=np.array([0, 4]))
    assert math.isclose(frequency_baseline(skew), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    cont = Encoded("continuous", np.array(["a"]), values=np.zeros((1, 3), np.float32))
    assert frequency_baseline(cont) == 1.0


def test_heldout_masks_are_fixed_and_count_right() -> None:
    corpus = _corpus([5, 12, 40, 7, 3])
    first = list(heldout_masks(corpus, 16, 0.3, 2))
    second = list(heldout_masks(corpus, 16, 0.3, 2))
    assert [b.x.shape[0] for b, _ in first] == [2, 2, 1]
    for (b1, m1), (b2, m2) in zip(first, second):
        assert torch.equal(m1, m2) and torch.equal(b1.x, b2.x)
        assert not (m1 & b1.padding_mask).any()                     # never a padding position
        assert torch.equal(m1.sum(1), num_masked(b1.n_valid, 0.3))
    assert first[1][0].n_valid.tolist() == [16, 7]                  # 40 tokens cut to max_len


class _Const(nn.Module):
    """masked_loss = the number of masked tokens of the batch (so the token-weighted mean is known)."""

    def masked_loss(self, batch, mask):
        return mask.sum().float()


class _NoRecon(nn.Module):
    def masked_loss(self, batch, mask):
        raise NotImplementedError


def test_heldout_loss_weights_by_masked_tokens_and_restores_mode() -> None:
    corpus = _corpus([10, 10, 20, 20])
    counts = [int(m.sum()) for _, m in heldout_masks(corpus, 32, 0.5, 2)]
    expect = sum(c * c for c in counts) / sum(counts)
    model = _Const().train()
    assert heldout_loss(model, corpus, 32, 0.5, 2, torch.device("cpu")) == pytest.approx(expect)
    assert model.training
    assert heldout_loss(_NoRecon(), corpus, 32, 0.5, 2, torch.device("cpu")) is None
