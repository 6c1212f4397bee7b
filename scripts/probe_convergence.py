"""Iterations, convergence and seconds of the linear probe's solver (pipeline_src/evaluate/linear.py).

On a synthetic many-class problem the size of TAPE remote homology (default: 1,195 classes,
12,312 / 736 / 718 train / valid / test rows, class sizes skewed as there), or on a linear job's
frozen features (``--features data/features/<task>/<method>/seed<k>.npz --processed
data/processed/<task> --split <name>``). Prints one line per regularization value of the grid:
iterations, converged, seconds. ``--max-iter`` / ``--tol`` try other stopping rules.

    python scripts/probe_convergence.py --dim 512
    python scripts/probe_convergence.py --features data/features/bbbp/none/seed0.npz --processed data/processed/bbbp --split scaffold
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_src.evaluate import linear  # noqa: E402


def synthetic(classes: int, n: tuple[int, int, int], dim: int, signal: float, seed: int):
    """Gaussian classes (means N(0, signal^2 I)), class frequencies ~ 1 / rank (Zipf), every class in train."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, classes + 1)
    p /= p.sum()
    means = rng.normal(0.0, signal, size=(classes, dim))
    ys = [np.concatenate([np.arange(classes), rng.choice(classes, size=n[0] - classes, p=p)])]
    ys += [rng.choice(classes, size=k, p=p) for k in n[1:]]
    y = np.concatenate(ys)
    X = means[y] + rng.normal(size=(len(y), dim))
    fold = np.array(["train"] * n[0] + ["valid"] * n[1] + ["test"] * n[2])
    return X.astype(np.float32), y, fold


def from_features(features: str, processed: str, split: str, task: str, metric: str, max_train_rows: int | None):
    """A linear job's frozen features with the labels and the folds its probe used."""
    from pipeline_src.evaluate.run import plan_folds

    f = np.load(features, allow_pickle=False)
    X, fids = f["X"], f["ids"].astype(str)
    ids, y, folds = plan_folds(Path(processed), [split], Path(processed).name, task, metric, max_train_rows, 1)
    pos = {k: i for i, k in enumerate(ids)}
    rows = np.array([pos[k] for k in fids])
    return X, y[rows], folds[split][rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=1195)
    p.add_argument("--rows", type=int, nargs=3, default=(12312, 736, 718), metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--signal", type=float, default=0.15, help="class-mean scale against unit noise")
    p.add_argument("--features"), p.add_argument("--processed"), p.add_argument("--split")
    p.add_argument("--task", default="multiclass"), p.add_argument("--metric", default="accuracy")
    p.add_argument("--max-iter", type=int), p.add_argument("--tol", type=float)
    p.add_argument("--max-train-rows", type=int, help="as evaluate.max_train_rows (features only)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.max_iter:
        linear.MAX_ITER = a.max_iter
    if a.tol:
        linear.TOL = a.tol
    if a.features:
        X, y, fold = from_features(a.features, a.processed, a.split, a.task, a.metric, a.max_train_rows)
        what = f"{a.features} ({a.split})"
    else:
        X, y, fold = synthetic(a.classes, tuple(a.rows), a.dim, a.signal, a.seed)
        what = f"synthetic: {a.classes} classes, rows {a.rows}, dim {a.dim}"
    t0 = time.perf_counter()
    res = linear.linear_probe(X, y, fold, a.task, a.metric, a.seed)
    total = time.perf_counter() - t0
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{what}; solver {res.probe['solver']}, max_iter {res.probe['max_iter']}, tol {res.probe['tol']}, "
          f"OMP_NUM_THREADS {threads}")
    for g in res.probe["grid"]:
        print("  " + json.dumps(g))
    print(f"chosen {res.hyper}, valid {res.valid:.4f}, test {res.test:.4f}, converged {res.probe['converged']}, "
          f"{total:.1f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
