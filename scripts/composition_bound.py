"""How far below the frequency baseline a model gets without reading any order: a reference for the
held-out ratio of a discrete corpus (``Did pretraining learn?`` in the report).

    python scripts/composition_bound.py --config config/quick_proteins.yaml --domain proteins \\
        --processed data/processed/uniprot

On the diagnostic's own held-out rows and masks (``pipeline_src.train.diagnostic``), each masked
token is predicted from

  * the training corpus's token frequencies alone (the baseline: ratio ≈ 1);
  * the sample's own composition: the counts of its visible tokens, smoothed towards the corpus
    frequencies with weight ``alpha`` (several values tried, the best printed);
  * the same, with the first position predicted by the training corpus's first-token frequencies.

A model whose ratio is no lower than these has learned no more than what a bag of its visible
tokens tells. Prints a markdown table of losses (nats) and ratios to the baseline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline_src.config import load_config  # noqa: E402
from pipeline_src.spec import resolve_pretrain  # noqa: E402
from pipeline_src.train.data import subsample  # noqa: E402
from pipeline_src.train.diagnostic import frequency_baseline, heldout_indices, heldout_masks  # noqa: E402
from pipeline_src.train.pretrain import load_corpus  # noqa: E402

VOCAB = 257          # batch ids: byte + 1, 0 = padding


def masked_targets(heldout, max_len: int, ratio: float, batch_size: int):
    """Per held-out sample: (visible ids, masked ids, masked positions), with the diagnostic's masks."""
    out = []
    for batch, mask in heldout_masks(heldout, max_len, ratio, batch_size):
        x, valid, m = batch.x.numpy(), (~batch.padding_mask).numpy(), mask.numpy()
        for i in range(x.shape[0]):
            out.append((x[i][valid[i] & ~m[i]], x[i][m[i]], np.flatnonzero(m[i])))
    return out


def mean_nll(samples, p_corpus: np.ndarray, alpha: float, p_first: np.ndarray | None) -> float:
    total, n = 0.0, 0
    for visible, target, pos in samples:
        counts = np.bincount(visible, minlength=VOCAB).astype(np.float64)
        p = (counts + alpha * p_corpus) / (counts.sum() + alpha) if np.isfinite(alpha) else p_corpus
        lp = np.log(p[target])
        if p_first is not None:
            lp = np.where(pos == 0, np.log(p_first[target]), lp)
        total -= float(lp.sum())
        n += len(target)
    return total / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="overlay(s) on config/config.yaml")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--processed", required=True, help="the corpus's prepared folder (data/processed/<corpus>)")
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed (draws the corpus subsample)")
    ap.add_argument("--alphas", default="25,50,100,200,400")
    a = ap.parse_args(argv)
    cfg = load_config(ROOT / "config" / "config.yaml", [Path(c) for c in a.config])
    if a.domain not in cfg["domains"]:
        raise SystemExit(f"composition_bound: no domain {a.domain!r}; the config has {sorted(cfg['domains'])}")
    job = resolve_pretrain(cfg, cfg["domains"][a.domain]["corpus"], "random")
    dcfg = dict(job.diagnostic)
    full = load_corpus(a.processed, fold="train")
    if full.kind != "discrete":
        raise SystemExit(f"composition_bound: {a.processed} holds continuous inputs; the bound is for token corpora")
    held_idx, rest_idx = heldout_indices(len(full), int(dcfg["heldout_samples"]))
    train = subsample(full.subset(rest_idx), job.corpus_subsample, a.seed)
    base = frequency_baseline(train)

    counts = np.bincount(train.tokens.astype(np.int64) + 1, minlength=VOCAB).astype(np.float64) + 1e-3
    p_corpus = counts / counts.sum()
    first = np.bincount(train.tokens[train.offsets[:-1]].astype(np.int64) + 1, minlength=VOCAB) + 1e-3
    p_first = first / first.sum()
    samples = masked_targets(full.subset(held_idx), job.max_len, float(dcfg["mask_ratio"]), int(dcfg["batch_size"]))

    rows = [("corpus token frequencies", mean_nll(samples, p_corpus, float("inf"), None))]
    best = min((mean_nll(samples, p_corpus, float(al), None), float(al)) for al in a.alphas.split(","))
    rows.append((f"the sample's visible tokens, alpha {best[1]:g}", best[0]))
    rows.append((f"the same, first position from first-token frequencies",
                 mean_nll(samples, p_corpus, best[1], p_first)))
    print(f"{a.domain}: {len(samples)} held-out samples, first {job.max_len} tokens, mask ratio "
          f"{dcfg['mask_ratio']}, corpus subsample {job.corpus_subsample} (seed {a.seed}); baseline {base:.4f} nats\n")
    print("| predictor | held-out loss (nats) | ratio to baseline |\n|---|---:|---:|")
    for name, loss in rows:
        print(f"| {name} | {loss:.4f} | {loss / base:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
