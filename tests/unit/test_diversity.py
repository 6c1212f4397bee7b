"""Mask diversity (pipeline_src/train/diversity.py): the measures on hand-made masks, the verdict's
thresholds, every method's ``draw_mask`` and a plugin method that only implements its mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_src.batch import Batch, InputSpec
from pipeline_src.data.encode import Encoded
from pipeline_src.methods import BUILTIN, MaskedAutoencoder, build_method
from pipeline_src.methods.masking import num_masked
from pipeline_src.train import diversity as dv

S, N, K = 1000, 28, 6


def random_masks(rng: np.random.Generator, s: int = S, n: int = N, k: int = K,
                 padding: np.ndarray | None = None) -> np.ndarray:
    m = np.zeros((s, n), dtype=bool)
    for i in range(s):
        valid = np.flatnonzero(~padding[i]) if padding is not None else np.arange(n)
        m[i, rng.choice(valid, min(k, len(valid) - 1), replace=False)] = True
    return m


def test_random_masks_give_entropy_near_one_and_different_views():
    rng = np.random.default_rng(0)
    pad = np.zeros((S, N), dtype=bool)
    out = dv.measures(random_masks(rng), random_masks(rng), pad, None)
    assert out["entropy"] > 0.99 and out["entropy"] == out["position_entropy"] and out["value_entropy"] is None
    # E|A∩B| = k^2 / n, so Jaccard ≈ (k^2/n) / (2k - k^2/n) = 0.12 at n 28, k 6
    assert out["jaccard"] == pytest.approx((K * K / N) / (2 * K - K * K / N), abs=0.02)
    assert out["identical_share"] == 0.0 and out["distinct_share"] > 0.99
    assert out["mask_ratio"] == pytest.approx(K / N)


def test_collapsed_masks_give_low_entropy_identical_pairs_and_the_verdict():
    rng = np.random.default_rng(1)
    pad = np.zeros((S, N), dtype=bool)
    fixed = np.zeros((S, N), dtype=bool)
    fixed[:, [3, 8, 20, 25]] = True                       # four features in every mask
    fixed[:, 11] = rng.random(S) < 0.7                    # a fifth in 70 % of them
    out = dv.summarize(fixed, fixed.copy(), random_masks(rng), random_masks(rng), pad, None, step=5)
    m = out["method"]
    assert m["entropy"] < 0.5 and m["jaccard"] == 1.0 and m["identical_share"] == 1.0
    assert m["distinct_share"] == pytest.approx(2 / S)    # two distinct masks in the slice
    assert out["verdict"] == "collapsed" and len(out["reasons"]) == 2 and out["step"] == 5
    assert out["random"]["entropy"] > 0.99 and out["entropy_ratio"] < 0.5
    assert out["thresholds"] == {"min_entropy_ratio": dv.MIN_ENTROPY_RATIO,
                                 "max_excess_identical_share": dv.MAX_EXCESS_IDENTICAL, "min_count": dv.MIN_COUNT}


def test_permuted_inputs_give_permuted_masks_and_equal_numbers():
    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 40, size=S)
    pad = np.arange(40)[None, :] >= lengths[:, None]
    tokens = np.where(pad, 0, rng.choice([5, 6, 7, 8, 9], p=[.4, .3, .15, .1, .05], size=(S, 40)))
    a, b = random_masks(rng, n=40, k=8, padding=pad), random_masks(rng, n=40, k=8, padding=pad)
    a |= (tokens == 9) & ~pad                             # a preference for one value, in one draw
    base = dv.measures(a, b, pad, tokens)
    perm = rng.permutation(40)                             # one permutation of the positions, every sample
    relabel = np.array([0, 1, 2, 3, 4, 9, 8, 7, 6, 5])    # and the ids relabelled (opaque symbols)
    moved = dv.measures(a[:, perm], b[:, perm], pad[:, perm], relabel[tokens][:, perm])
    for key, v in base.items():
        assert moved[key] == pytest.approx(v, abs=1e-12), key
    assert base["value_entropy"] < base["position_entropy"]  # the preference shows per value


def test_sequences_rate_token_values_against_their_frequency():
    """A method masking one frequent value only is collapsed per value, though random per position."""
    rng = np.random.default_rng(3)
    pad = np.zeros((S, 30), dtype=bool)
    tokens = rng.choice([10, 11, 12, 13], p=[.55, .25, .15, .05], size=(S, 30))
    only = tokens == 10                                   # every occurrence of the frequent value
    ra, rb = random_masks(rng, n=30, k=16), random_masks(rng, n=30, k=16)
    out = dv.summarize(only, only.copy(), ra, rb, pad, tokens)
    assert out["unit"] == "token_value" and out["method"]["value_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert out["method"]["position_entropy"] > 0.99      # positions are hit evenly
    assert out["random"]["entropy"] > 0.99               # random masking is flat per value: rates, not shares
    assert out["verdict"] == "collapsed"


def test_normalized_entropy_rates_units_by_their_own_counts():
    # equal rates on units of very different sizes: entropy 1 (masked shares differ, rates do not)
    assert dv.normalized_entropy(np.array([50, 5, 2]), np.array([500, 50, 20])) == pytest.approx(1.0)
    # a unit below MIN_COUNT is left out; fewer than two rated units or nothing masked: None
    assert dv.normalized_entropy(np.array([0, 50, 5]), np.array([10, 500, 50])) == pytest.approx(1.0)
    assert dv.normalized_entropy(np.array([50, 5]), np.array([500, 19])) is None
    assert dv.normalized_entropy(np.array([0, 0]), np.array([100, 100])) is None
    # all masking on one of four units: 0
    assert dv.normalized_entropy(np.array([40, 0, 0, 0]), np.array([100] * 4)) == pytest.approx(0.0)


@pytest.mark.parametrize("entropy, identical, expected", [
    (0.81, 0.0, "fine"), (0.79, 0.0, "collapsed"),                    # entropy ratio vs 1.0: threshold 0.8
    (0.95, 0.25, "fine"), (0.95, 0.26, "collapsed"),                  # identical pairs: excess over 0.25
])
def test_verdict_thresholds(entropy, identical, expected):
    word, ratio, reasons = dv.verdict({"entropy": entropy, "identical_share": identical},
                                      {"entropy": 1.0, "identical_share": 0.0})
    assert word == expected and ratio == pytest.approx(entropy) and bool(reasons) == (expected == "collapsed")
    # the excess is over the reference's own identical share (small inputs repeat by chance)
    assert dv.verdict({"entropy": 1.0, "identical_share": 0.5}, {"entropy": 1.0, "identical_share": 0.3})[0] == "fine"


# --- the methods' masks -------------------------------------------------------------------------

MODEL = {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2, "max_len": 24,
         "num_latents": 8, "decoder_dim": 16, "decoder_heads": 2}


def toy_heldout(n: int = 60, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    lens = rng.integers(8, 24, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = rng.integers(65, 75, size=int(offsets[-1])).astype(np.uint8)
    return Encoded("discrete", np.array([f"s{i}" for i in range(n)], dtype=object), tokens=tokens, offsets=offsets)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_method_draws_its_mask_or_says_it_has_none(name):
    spec = InputSpec("discrete", 24)
    torch.manual_seed(0)
    method = build_method(name, spec, MODEL, {})
    batch = toy_heldout(16).batch(np.arange(16), 24)
    a = method.draw_mask(batch, torch.Generator().manual_seed(1))
    if name == "none":
        assert a is None and dv.mask_diversity(method, toy_heldout(), 24, 16, "cpu") is None
        return
    assert a.shape == batch.padding_mask.shape and a.dtype == torch.bool and not (a & batch.padding_mask).any()
    assert (a.sum(1) >= 1).all()
    again = method.draw_mask(batch, torch.Generator().manual_seed(1))
    assert torch.equal(a, again)                                       # from the generator only
    if name in ("random", "metamae", "span"):
        ratio = method.cfg["mask_ratio"]
        assert torch.equal(a.sum(1), num_masked(batch.n_valid, ratio))


def test_sma_draw_mask_follows_the_warmup_step():
    spec = InputSpec("discrete", 24)
    torch.manual_seed(0)
    sma = build_method("sma", spec, MODEL, {"warmup_steps": 10, "warmup_style": "per_sample"})
    batch = toy_heldout(32).batch(np.arange(32), 24)
    random_at_0 = sma.draw_mask(batch, torch.Generator().manual_seed(4), step=0)
    guided = sma.guided_mask(batch, sma.encoder.embed(batch), sma.sample_ratio(32, None, torch.device("cpu")),
                             torch.Generator().manual_seed(4))
    assert not torch.equal(random_at_0, guided)                        # step 0 of the warm-up: random masks
    assert torch.equal(sma.draw_mask(batch, torch.Generator().manual_seed(4)), guided)  # after it: guided


class FixedMask(MaskedAutoencoder):
    """A plugin method: only its mask (the same first tokens every time)."""
    name = "fixed_plugin"
    defaults = {"mask_ratio": 0.3}

    def make_mask(self, batch: Batch, x_emb, ratio, generator, step):
        k = num_masked(batch.n_valid, ratio)
        return torch.arange(batch.padding_mask.shape[1])[None, :] < k[:, None], {}


def test_a_plugin_method_gets_the_same_diversity_code_and_is_found_collapsed():
    spec = InputSpec("discrete", 24)
    held = toy_heldout(200)
    plugin = FixedMask(spec, MODEL, {})
    rec = dv.mask_diversity(plugin, held, 24, 64, "cpu", step=3)
    assert rec["verdict"] == "collapsed" and rec["method"]["identical_share"] == 1.0 and rec["step"] == 3
    assert rec["method"]["position_entropy"] < 0.7 and rec["random"]["position_entropy"] > 0.95
    torch.manual_seed(0)
    rnd = dv.mask_diversity(build_method("random", spec, MODEL, {}), held, 24, 64, "cpu")
    assert rnd["verdict"] == "fine" and rnd["samples"] == 200
    assert rnd["method"]["identical_share"] < 0.05 and rnd["method"]["jaccard"] < 0.4
    assert rnd["method"]["mask_ratio"] == pytest.approx(rnd["random"]["mask_ratio"])  # same counts
    assert plugin.training                                              # left in the mode it was in
