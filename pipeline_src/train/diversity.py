"""Mask diversity: does a method's masking still vary at the end of pretraining, or has it collapsed?

Computed once per pretraining run on the diagnostic's held-out slice and recorded in ``meta.json``
(key ``mask_diversity``); the report only reads it. Everything is domain-agnostic: only positions,
token ids taken as opaque symbols, and the slice's own frequencies are used, never what an input
means.

Two masks are drawn for every held-out sample from the final weights (two calls of the method's
:meth:`~pipeline_src.methods.base.Method.draw_mask` with differently seeded generators), and two
uniform random masks with the same number of masked tokens per sample as the method's first draw
(the reference: what random masking at the same ratio gives at these sizes). For each pair:

**Masking entropy** (``entropy``). A *unit* is an input position (fixed-layout inputs, i.e.
``kind == "continuous"``: one token per feature, so a position is a feature) or a token value
(sequences, ``kind == "discrete"``: ids as opaque symbols). For a unit u with ``n_u`` valid
occurrences in the slice, ``m_u`` of them masked (over both draws), its relative masking rate is

    rho_u = (m_u / n_u) / (sum_v m_v / sum_v n_v)

i.e. its masked share divided by its share among the valid tokens (1 for every unit under uniform
random masking, up to sampling noise). The masking entropy is the normalized entropy of the rates,

    entropy = H(rho / sum rho) / log U,

over the U units with at least ``MIN_COUNT`` valid occurrences (rarer units are too noisy to rate).
It is 1 when every unit is masked at the same rate, and 0 when one unit takes all the masking.
For a fixed layout with every position valid, rho / sum rho is the share of all masked tokens that
fall on each feature, so this is the usual normalized entropy of the per-feature masking
frequency. For sequences the per-position entropy (``position_entropy``, the same formula with
positions as units) is recorded as well; ``entropy`` is the per-unit one of the input's kind.

**Two views** (SMA appendix C: two masks from the same weights should differ): ``jaccard`` is the
mean over samples of |A ∩ B| / |A ∪ B| of the two draws, ``identical_share`` the share of samples
(with at least one masked token) whose two draws are equal, ``distinct_share`` the number of
distinct masks among the first draw's masks over the number of samples (1 when no two samples get
the same mask; meaningful for fixed-layout inputs, where every sample has the same positions).

**Verdict** (:func:`verdict`): ``collapsed`` when the method's masking entropy is below
``MIN_ENTROPY_RATIO`` times the random reference's, or when its share of identical pairs exceeds
the reference's by more than ``MAX_EXCESS_IDENTICAL``; else ``fine``. Why these values
(docs/mask_diversity.md): uniform random masking gives an entropy of 0.99-1.00 and 0.000 identical
pairs at the quick default's sizes (1,000 held-out samples of 28 features, or of 22-48 bytes), and
the collapsed HIGGS run of the issue that prompted this check had entropy 0.65 (four features in
every mask: the masking concentrated on about 28^0.65 = 9 of the 28 features), with only 24 of
128 masks distinct. 0.8 sits between them: it is the entropy of a masking spread evenly over
U^0.8 units (14 of 28 features, 13 of the 24 byte values of the MOSES slice), half or fewer of the inputs; a guided method
is expected to prefer some inputs, not to ignore half of them. A quarter of the samples getting
the same mask twice means the random query subset no longer changes the mask.

Pure functions on numpy bool arrays; :func:`mask_diversity` draws the masks with torch.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_ENTROPY_RATIO = 0.8        # collapsed below this fraction of the random reference's entropy
MAX_EXCESS_IDENTICAL = 0.25    # collapsed when identical pairs exceed the reference's share by more
MIN_COUNT = 20                 # units (positions / token values) with fewer valid occurrences are not rated
DRAW_SEEDS = (0x5EED1, 0x5EED2)  # the method's two draws
REFERENCE_SEED = 0x5EED3         # the random reference's two draws
VERDICTS = ("fine", "collapsed")


def normalized_entropy(masked: np.ndarray, valid: np.ndarray, min_count: int = MIN_COUNT) -> float | None:
    """H(rho / sum rho) / log U of the relative masking rates rho_u = (m_u / n_u) / (sum m / sum n).

    masked, valid: [U] counts per unit (masked occurrences, valid occurrences). Units with fewer
    than ``min_count`` valid occurrences are left out; None when fewer than two units remain or
    nothing is masked. 1.0 = every unit masked at the same rate."""
    masked, valid = np.asarray(masked, dtype=np.float64), np.asarray(valid, dtype=np.float64)
    keep = valid >= max(int(min_count), 1)
    m, n = masked[keep], valid[keep]
    if len(m) < 2 or m.sum() <= 0:
        return None
    rate = m / n
    p = rate / rate.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(p)))


def unit_counts(masks: list[np.ndarray], padding: np.ndarray, tokens: np.ndarray | None = None,
                n_values: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(masked, valid) counts per unit, summed over the draws in ``masks``.

    masks: draws of [S, N] bool; padding: [S, N] bool (True = padding). With ``tokens`` ([S, N] int
    ids) the units are token values 0..n_values-1 (default: the largest id + 1), else positions."""
    valid_pos = ~np.asarray(padding, dtype=bool)
    if tokens is None:
        valid = valid_pos.sum(0) * len(masks)
        masked = sum((np.asarray(m, dtype=bool) & valid_pos).sum(0) for m in masks)
        return np.asarray(masked, dtype=np.int64), np.asarray(valid, dtype=np.int64)
    tok = np.asarray(tokens, dtype=np.int64)
    v = int(n_values) if n_values is not None else int(tok.max(initial=0)) + 1
    valid = np.bincount(tok[valid_pos], minlength=v) * len(masks)
    masked = sum(np.bincount(tok[np.asarray(m, dtype=bool) & valid_pos], minlength=v) for m in masks)
    return np.asarray(masked, dtype=np.int64), np.asarray(valid, dtype=np.int64)


def pair_overlap(a: np.ndarray, b: np.ndarray, padding: np.ndarray) -> dict[str, float | None]:
    """Two views of the same samples: mean Jaccard |A∩B| / |A∪B|, share of identical pairs (samples
    with at least one masked token in either draw), and distinct masks of ``a`` / samples."""
    valid = ~np.asarray(padding, dtype=bool)
    a, b = np.asarray(a, dtype=bool) & valid, np.asarray(b, dtype=bool) & valid
    union = (a | b).sum(1)
    inter = (a & b).sum(1)
    rows = union > 0
    if not rows.any():
        return {"jaccard": None, "identical_share": None, "distinct_share": None}
    jac = inter[rows] / union[rows]
    identical = (a[rows] == b[rows]).all(1)
    lengths = valid.sum(1)
    distinct = len({(int(lengths[i]), a[i].tobytes()) for i in range(len(a))})
    return {"jaccard": float(jac.mean()), "identical_share": float(identical.mean()),
            "distinct_share": distinct / len(a)}


def measures(a: np.ndarray, b: np.ndarray, padding: np.ndarray, tokens: np.ndarray | None,
             min_count: int = MIN_COUNT) -> dict[str, float | None]:
    """Every number of one pair of draws (see the module docstring). ``tokens`` given (sequences):
    ``entropy`` is per token value, else per position."""
    pos = normalized_entropy(*unit_counts([a, b], padding), min_count=min_count)
    val = None if tokens is None else normalized_entropy(*unit_counts([a, b], padding, tokens), min_count=min_count)
    valid = ~np.asarray(padding, dtype=bool)
    n_valid = int(valid.sum())
    ratio = float((np.asarray(a, dtype=bool) & valid).sum() / n_valid) if n_valid else None
    return {"entropy": pos if tokens is None else val, "position_entropy": pos, "value_entropy": val,
            **pair_overlap(a, b, padding), "mask_ratio": ratio}


def verdict(method: dict[str, Any], reference: dict[str, Any], min_entropy_ratio: float = MIN_ENTROPY_RATIO,
            max_excess_identical: float = MAX_EXCESS_IDENTICAL) -> tuple[str, float | None, list[str]]:
    """(``fine`` / ``collapsed``, entropy ratio method / reference, the reasons for a collapse)."""
    reasons: list[str] = []
    e, e_ref = method.get("entropy"), reference.get("entropy")
    ratio = e / e_ref if e is not None and e_ref else None
    if ratio is not None and ratio < min_entropy_ratio:
        reasons.append(f"masking entropy {e:.2f} is {ratio:.2f} of random masking's {e_ref:.2f} "
                       f"(< {min_entropy_ratio:g})")
    same, same_ref = method.get("identical_share"), reference.get("identical_share") or 0.0
    if same is not None and same - same_ref > max_excess_identical:
        reasons.append(f"{same:.0%} of the samples get the same mask twice (random masking: {same_ref:.0%})")
    return ("collapsed" if reasons else "fine"), ratio, reasons


def summarize(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray, padding: np.ndarray,
              tokens: np.ndarray | None, step: int | None = None, min_count: int = MIN_COUNT) -> dict[str, Any]:
    """The ``mask_diversity`` record: the method's draws (a, b), the random reference's (ra, rb)."""
    mine, ref = measures(a, b, padding, tokens, min_count), measures(ra, rb, padding, tokens, min_count)
    word, ratio, reasons = verdict(mine, ref)
    return {"unit": "position" if tokens is None else "token_value", "samples": int(len(a)), "step": step,
            "method": mine, "random": ref, "entropy_ratio": ratio, "verdict": word, "reasons": reasons,
            "thresholds": {"min_entropy_ratio": MIN_ENTROPY_RATIO, "max_excess_identical_share": MAX_EXCESS_IDENTICAL,
                           "min_count": int(min_count)}}


def mask_diversity(method: Any, heldout: Any, max_len: int, batch_size: int, device: Any,
                   step: int | None = None) -> dict[str, Any] | None:
    """Draw two masks per held-out sample from ``method`` (its ``draw_mask`` at ``step``, in eval
    mode) and two random reference masks with the same counts; :func:`summarize` them. None for a
    method without masks (``draw_mask`` returns None, e.g. ``none``) or an empty slice."""
    import torch

    from ..methods.masking import random_mask

    draw = getattr(method, "draw_mask", None)
    if draw is None or len(heldout) == 0:
        return None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gens = [torch.Generator(device=dev).manual_seed(s) for s in DRAW_SEEDS]
    ref_gen = torch.Generator(device="cpu").manual_seed(REFERENCE_SEED)
    parts: dict[str, list[np.ndarray]] = {"a": [], "b": [], "ra": [], "rb": [], "pad": [], "tok": []}
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(heldout), batch_size):
                batch = heldout.batch(np.arange(start, min(start + batch_size, len(heldout))), max_len)
                on_dev = batch.to(dev)
                a = draw(on_dev, gens[0], step)
                if a is None:
                    return None
                b = draw(on_dev, gens[1], step)
                a, b = a.cpu(), b.cpu()
                pad = batch.padding_mask
                k = (a & ~pad).sum(1)
                ra = random_mask(torch.rand(pad.shape, generator=ref_gen), pad, k)
                rb = random_mask(torch.rand(pad.shape, generator=ref_gen), pad, k)
                width = max_len - pad.shape[1]                       # pad every batch to max_len columns
                for key, t in (("a", a), ("b", b), ("ra", ra), ("rb", rb)):
                    parts[key].append(np.pad(t.numpy(), ((0, 0), (0, width))))
                parts["pad"].append(np.pad(pad.numpy(), ((0, 0), (0, width)), constant_values=True))
                if batch.x.dim() == 2:                               # discrete ids
                    parts["tok"].append(np.pad(batch.x.numpy(), ((0, 0), (0, width))))
    finally:
        method.train(was_training)
    cat = {k: np.concatenate(v) for k, v in parts.items() if v}
    return summarize(cat["a"], cat["b"], cat["ra"], cat["rb"], cat["pad"], cat.get("tok"), step)
