"""The order-free reference of the held-out diagnostic, broken down: how far below the frequency
baseline a predictor gets that reads no order (each run's report shows the last row, "order-free
reference / baseline", beside every model's ratio).

    python scripts/composition_bound.py --config config/quick_proteins.yaml --domain proteins \\
        --processed data/processed/uniprot

On the diagnostic's own held-out rows and masks (``pipeline_src.train.diagnostic``), each masked
token is predicted from

  * the training corpus's token frequencies alone (the baseline: ratio ≈ 1);
  * the sample's own composition: the counts of its visible tokens, smoothed towards the corpus
    frequencies (the best of ``REFERENCE_ALPHAS``);
  * the same, with the first position predicted by the training corpus's first-token frequencies
    (:func:`~pipeline_src.train.diagnostic.order_free_loss`, the report's reference).

Prints a markdown table of losses (nats) and ratios to the baseline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline_src.config import load_config  # noqa: E402
from pipeline_src.spec import resolve_pretrain  # noqa: E402
from pipeline_src.train.diagnostic import frequency_baseline, order_free_loss  # noqa: E402
from pipeline_src.train.pretrain import load_corpus, split_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="overlay(s) on config/config.yaml")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--processed", required=True, help="the corpus's prepared folder (data/processed/<corpus>)")
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed (draws the corpus subsample)")
    a = ap.parse_args(argv)
    cfg = load_config(ROOT / "config" / "config.yaml", [Path(c) for c in a.config])
    if a.domain not in cfg["domains"]:
        raise SystemExit(f"composition_bound: no domain {a.domain!r}; the config has {sorted(cfg['domains'])}")
    job = resolve_pretrain(cfg, cfg["domains"][a.domain]["corpus"], "random")
    dcfg = dict(job.diagnostic)
    full = load_corpus(a.processed, fold="train")
    if full.kind != "discrete":
        raise SystemExit(f"composition_bound: {a.processed} holds continuous inputs; the reference is for token corpora")
    heldout, train = split_corpus(full, job, a.seed)                  # the rows pretraining holds out and uses
    base = frequency_baseline(train)
    args = (heldout, train, job.max_len, float(dcfg["mask_ratio"]), int(dcfg["batch_size"]))

    freq, _ = order_free_loss(*args, alpha=1e12, first_position=False)
    bag, alpha = order_free_loss(*args, first_position=False)
    ref, alpha_ref = order_free_loss(*args)
    print(f"{a.domain}: {len(heldout)} held-out samples, first {job.max_len} tokens, mask ratio "
          f"{dcfg['mask_ratio']}, corpus subsample {job.corpus_subsample} (seed {a.seed}); baseline {base:.4f} nats\n")
    print("| predictor | held-out loss (nats) | ratio to baseline |\n|---|---:|---:|")
    for name, loss in [("corpus token frequencies", freq),
                       (f"the sample's visible tokens, alpha {alpha:g}", bag),
                       (f"the same, first position from first-token frequencies, alpha {alpha_ref:g} "
                        "(the report's reference)", ref)]:
        print(f"| {name} | {loss:.4f} | {loss / base:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
