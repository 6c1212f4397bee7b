"""Did pretraining learn? The held-out reconstruction diagnostic (DESIGN §6).

- A fixed slice of the corpus's training fold (``heldout_indices``: the same rows for every method
  and seed) is kept out of pretraining.
- On it every method reconstructs the same masks: uniform random masks at one fixed ratio, drawn
  from a generator with a fixed seed, so the loss is comparable across methods (each method's own
  training loss is not: the ratios and the loss terms differ).
- The loss is divided by the corpus's frequency baseline: for discrete inputs the entropy (nats) of
  the training corpus's token frequencies, the cross-entropy of a model that knows only those
  frequencies; for standardized continuous inputs 1.0, the mean squared error of predicting the
  (training) mean. A ratio near 1 means the model learned nothing beyond token frequencies.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batch import BYTE_VOCAB_SIZE, Batch
from ..data.encode import Encoded
from ..methods.masking import num_masked, random_mask

# how every method is scored (meta.json's diagnostic.scoring; the report quotes it)
SCORING = ("the same fixed random masks for every method; the encoder reads the visible tokens and the decoder "
           "predicts the masked ones in one forward pass, with no step and no use of the masked tokens' values")
HELDOUT_SEED = 0x4E1D  # fixed: the held-out rows and masks never depend on the run's seed


def heldout_indices(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, the other rows), both sorted; ``size`` is capped at a tenth of ``n``."""
    size = min(int(size), n // 10)
    perm = np.random.default_rng(HELDOUT_SEED).permutation(n)
    return np.sort(perm[:size]), np.sort(perm[size:])


def frequency_baseline(corpus: Encoded) -> float:
    """Entropy (nats) of the token frequencies of ``corpus``; 1.0 for continuous inputs."""
    if corpus.kind == "continuous":
        return 1.0
    counts = np.bincount(corpus.tokens, minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def heldout_masks(heldout: Encoded, max_len: int, mask_ratio: float, batch_size: int) -> Iterator[tuple[Batch, torch.Tensor]]:
    """The held-out batches (first ``max_len`` tokens) with their fixed masks, in order: the noise is
    drawn on the CPU from a generator with a fixed seed, so the masks are the same on every device
    and for every method."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(HELDOUT_SEED)
    for start in range(0, len(heldout), batch_size):
        batch = heldout.batch(np.arange(start, min(start + batch_size, len(heldout))), max_len)
        noise = torch.rand(batch.padding_mask.shape, generator=gen)
        yield batch, random_mask(noise, batch.padding_mask, num_masked(batch.n_valid, mask_ratio))


@torch.no_grad()
def heldout_loss(method: nn.Module, heldout: Encoded, max_len: int, mask_ratio: float, batch_size: int,
                 device: torch.device, adapted: bool = False) -> float | None:
    """Token-weighted mean reconstruction loss on ``heldout`` with the fixed masks, through the one
    call every method answers the same way (``masked_loss``: encode the visible tokens, predict the
    masked ones, no step); None for a method that does not reconstruct (``none``). ``adapted``:
    through ``adapted_masked_loss`` instead, the method's own test-time adaptation (None where it
    has none)."""
    was_training = method.training
    method.eval()
    total, count = 0.0, 0
    try:
        for batch, mask in heldout_masks(heldout, max_len, mask_ratio, batch_size):
            try:
                score = method.adapted_masked_loss if adapted else method.masked_loss
                loss = score(batch.to(device), mask.to(device))
            except NotImplementedError:
                return None
            n = int(mask.sum())
            total += float(loss) * n
            count += n
    finally:
        method.train(was_training)
    return total / count if count else None


REFERENCE_ALPHAS = (25.0, 50.0, 100.0, 200.0, 400.0)


def order_free_loss(heldout: Encoded, train: Encoded, max_len: int, mask_ratio: float, batch_size: int,
                    alpha: float | None = None, first_position: bool = True) -> tuple[float, float] | None:
    """(loss, alpha): the held-out loss of a predictor that reads no order, on the diagnostic's rows
    and masks; None for continuous inputs.

    A masked token is predicted from the counts of the sample's visible tokens, smoothed towards
    the training corpus's token frequencies with weight ``alpha``:
    ``p = (counts + alpha * p_corpus) / (n_visible + alpha)``; with ``first_position`` the first
    position from the training corpus's first-token frequencies instead. ``alpha`` None: the best
    of ``REFERENCE_ALPHAS`` on this slice (so the reference is, if anything, a little optimistic).
    A model whose held-out loss is no lower has learned no more than a bag of its visible tokens."""
    if heldout.kind != "discrete" or len(heldout) == 0:
        return None
    smooth = 1e-3                                                   # unseen tokens keep a finite loss
    ids = torch.from_numpy(train.tokens.astype(np.int64) + 1)       # batch ids: byte + 1
    p_corpus = torch.bincount(ids, minlength=BYTE_VOCAB_SIZE).double() + smooth
    p_corpus /= p_corpus.sum()
    firsts = torch.from_numpy(train.tokens[train.offsets[:-1][train.lengths() > 0]].astype(np.int64) + 1)
    p_first = torch.bincount(firsts, minlength=BYTE_VOCAB_SIZE).double() + smooth
    p_first /= p_first.sum()
    alphas = REFERENCE_ALPHAS if alpha is None else (float(alpha),)
    total, count = torch.zeros(len(alphas), dtype=torch.float64), 0
    for batch, mask in heldout_masks(heldout, max_len, mask_ratio, batch_size):
        x = batch.x                                                 # [B, N] ids, 0 = padding
        visible = (~batch.padding_mask & ~mask).double()            # [B, N]
        counts = torch.zeros(x.shape[0], BYTE_VOCAB_SIZE, dtype=torch.float64).scatter_add_(1, x, visible)  # [B, V]
        n_vis = counts.sum(1, keepdim=True)                         # [B, 1]
        tgt = torch.gather(counts, 1, x)                            # [B, N] visible count of each token
        for j, a in enumerate(alphas):
            p = (tgt + a * p_corpus[x]) / (n_vis + a)               # [B, N]
            if first_position:
                p[:, 0] = p_first[x[:, 0]]
            total[j] += -torch.log(p[mask]).sum()
        count += int(mask.sum())
    if count == 0:
        return None
    j = int(torch.argmin(total))
    return float(total[j]) / count, alphas[j]


def diagnostic(method: nn.Module, heldout: Encoded, train: Encoded, max_len: int, cfg: dict[str, Any],
               device: torch.device) -> dict[str, Any]:
    """``{heldout_loss, baseline, ratio, reference_loss, reference_ratio, heldout_samples, mask_ratio}``
    for ``model.pt``'s metadata (reference: :func:`order_free_loss`, None for continuous inputs)."""
    base = frequency_baseline(train)
    ratio_m, bs = float(cfg["mask_ratio"]), int(cfg["batch_size"])
    loss = heldout_loss(method, heldout, max_len, ratio_m, bs, device)
    adapted = heldout_loss(method, heldout, max_len, ratio_m, bs, device, adapted=True)   # a second, labelled column
    ratio = loss / base if loss is not None and base > 0 and math.isfinite(loss) else None
    ref = order_free_loss(heldout, train, max_len, ratio_m, bs)
    return {"heldout_loss": loss, "baseline": base, "ratio": ratio,
            "reference_loss": ref[0] if ref else None, "reference_ratio": ref[0] / base if ref and base > 0 else None,
            "heldout_samples": len(heldout), "mask_ratio": ratio_m, "scoring": SCORING,
            "heldout_adapted_loss": adapted,
            "adapted_ratio": adapted / base if adapted is not None and base > 0 and math.isfinite(adapted) else None}
