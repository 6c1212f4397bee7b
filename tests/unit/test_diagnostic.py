"""The held-out diagnostic (pipeline_src/train/diagnostic.py): rows, baseline, masks and loss, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline_src.batch import Batch
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


def _order_free_by_loop(heldout: Encoded, train: Encoded, max_len: int, ratio: float, alpha: float,
                        first_position: bool) -> float:
    """order_free_loss written out sample by sample, token by token."""
    V = 257
    corpus = np.bincount(train.tokens.astype(np.int64) + 1, minlength=V) + 1e-3
    corpus = corpus / corpus.sum()
    first = np.bincount(train.tokens[train.offsets[:-1]].astype(np.int64) + 1, minlength=V) + 1e-3
    first = first / first.sum()
    total, n = 0.0, 0
    for batch, mask in heldout_masks(heldout, max_len, ratio, 3):
        for i in range(batch.x.shape[0]):
            ids, m, valid = batch.x[i].tolist(), mask[i].tolist(), (~batch.padding_mask[i]).tolist()
            visible = [t for t, mi, v in zip(ids, m, valid) if v and not mi]
            for pos, (t, mi) in enumerate(zip(ids, m)):
                if not mi:
                    continue
                p = first[t] if first_position and pos == 0 else (visible.count(t) + alpha * corpus[t]) / (len(visible) + alpha)
                total -= math.log(p)
                n += 1
    return total / n


@pytest.mark.parametrize("first_position", [True, False])
def test_order_free_loss_matches_a_loop(first_position: bool) -> None:
    from pipeline_src.train.diagnostic import REFERENCE_ALPHAS, order_free_loss

    train, heldout = _corpus([8, 12, 30, 9, 15, 6], seed=1), _corpus([10, 25, 4, 17, 12], seed=2)
    for alpha in (1.0, 50.0):
        loss, a = order_free_loss(heldout, train, 16, 0.4, 3, alpha=alpha, first_position=first_position)
        assert a == alpha
        assert loss == pytest.approx(_order_free_by_loop(heldout, train, 16, 0.4, alpha, first_position), rel=1e-9)
    best, a = order_free_loss(heldout, train, 16, 0.4, 3, first_position=first_position)
    assert a in REFERENCE_ALPHAS
    assert best == pytest.approx(min(_order_free_by_loop(heldout, train, 16, 0.4, x, first_position)
                                     for x in REFERENCE_ALPHAS), rel=1e-9)
    cont = Encoded("continuous", np.array(["a"]), values=np.zeros((1, 3), np.float32))
    assert order_free_loss(cont, cont, 3, 0.3, 2) is None


# --- the same test for every method: no step on, no use of, the held-out targets ------------------

METHOD_CFGS = {"random": {}, "sma": {}, "r2mae": {}, "sma_r2": {}, "span": {},
               "metamae": {"support_ratio": 0.4, "inner_lr": 1.0}}   # a large step: a leak would show
DIAG_MODEL = {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2, "max_len": 24,
              "decoder_dim": 16, "decoder_heads": 2}


def _method(name: str):
    from pipeline_src.batch import InputSpec
    from pipeline_src.methods import build_method

    torch.manual_seed(0)
    return build_method(name, InputSpec("discrete", max_len=24), DIAG_MODEL, METHOD_CFGS[name]).double().eval()


def _interaction(score, batch, mask) -> float:
    """Largest second difference of the loss in the values of two masked tokens j != k:
    L(a_j, a_k) - L(a_j, b_k) - L(b_j, a_k) + L(b_j, b_k). A scorer whose predictions do not read the
    masked tokens' values is a sum over masked tokens of -log p_j(x_j | visible), so each term
    depends on one value and this is 0 up to rounding; one that adapts on them (a step whose support
    holds masked tokens) couples the terms."""
    masked = mask[0].nonzero().flatten().tolist()

    def loss(changes):
        x = batch.x.clone()
        for j, v in changes.items():
            x[0, j] = v
        return float(score(Batch(x, batch.padding_mask), mask))

    worst = 0.0
    for j in masked:
        for k in masked:
            if j < k:
                a_j, a_k = int(batch.x[0, j]), int(batch.x[0, k])
                b_j, b_k = 1 + (a_j % 200) + 7, 1 + (a_k % 200) + 11
                d = (loss({}) - loss({k: b_k}) - loss({j: b_j}) + loss({j: b_j, k: b_k}))
                worst = max(worst, abs(d))
    return worst


@pytest.mark.parametrize("name", sorted(METHOD_CFGS))
def test_every_method_is_scored_without_its_held_out_targets(name: str) -> None:
    """masked_loss, the diagnostic's one call, never reads the masked tokens' values before it
    scores them, for every method (MetaMAE included: no inner step on held-out targets)."""
    corpus = _corpus([20], seed=3)
    batch, mask = next(iter(heldout_masks(corpus, 24, 0.5, 1)))
    method = _method(name)
    with torch.no_grad():
        assert _interaction(method.masked_loss, batch, mask) < 1e-9, name


def test_metamae_adapted_column_steps_on_visible_tokens_only() -> None:
    """MetaMAE's own adaptation (the second column) changes the loss, and still reads no masked value."""
    corpus = _corpus([20], seed=3)
    batch, mask = next(iter(heldout_masks(corpus, 24, 0.5, 1)))
    method = _method("metamae")
    with torch.no_grad():
        plain, adapted = float(method.masked_loss(batch, mask)), float(method.adapted_masked_loss(batch, mask))
        assert abs(plain - adapted) > 1e-6
        assert _interaction(method.adapted_masked_loss, batch, mask) < 1e-9
    with pytest.raises(NotImplementedError):
        _method("random").adapted_masked_loss(batch, mask)


def test_diagnostic_records_how_it_scored_and_the_adapted_column() -> None:
    from pipeline_src.train.diagnostic import SCORING, diagnostic

    train, heldout = _corpus([12, 20, 9, 15, 30, 11], seed=4), _corpus([20, 14, 9], seed=5)
    cfg = {"mask_ratio": 0.3, "batch_size": 2}
    meta = diagnostic(_method("metamae").float(), heldout, train, 24, cfg, torch.device("cpu"))
    assert meta["scoring"] == SCORING and "no step" in SCORING
    assert meta["heldout_adapted_loss"] is not None and meta["heldout_adapted_loss"] != meta["heldout_loss"]
    assert meta["adapted_ratio"] == pytest.approx(meta["heldout_adapted_loss"] / meta["baseline"])
    plain = diagnostic(_method("random").float(), heldout, train, 24, cfg, torch.device("cpu"))
    assert plain["heldout_adapted_loss"] is None and plain["adapted_ratio"] is None and plain["heldout_loss"] > 0
