"""Linear probe on frozen features (the MetaMAE / DABS protocol).

Features are standardized with train-fold statistics; the regularization strength is chosen on
the validation fold (never on test); the chosen model is then scored on test.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from .metrics import compute_metric, is_better

ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)   # ridge penalty
CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)                # inverse logistic penalty


@dataclass
class ProbeResult:
    test: float
    valid: float
    hyper: dict
    n: dict
    tasks: list[dict] | None = None   # several label columns: per-task values (multitask.per_task)


def _predict(model, X: np.ndarray, task: str, metric: str) -> np.ndarray:
    if task == "regression":
        return model.predict(X)
    if metric == "roc_auc":
        return model.predict_proba(X)[:, 1]
    return model.predict(X)


def linear_probe(X: np.ndarray, y: np.ndarray, fold: np.ndarray, task: str, metric: str, seed: int = 0) -> ProbeResult:
    """X: [n, D] features; y: [n] labels, or [n, T] with NaN for missing labels (one probe per
    task on its labelled rows, see multitask.per_task); fold: [n] in {'train', 'valid', 'test'}."""
    if y.ndim == 2:
        from .multitask import per_task

        return per_task(lambda rows, yt: linear_probe(X[rows], yt, fold[rows], task, metric, seed), y, fold, task, metric)
    tr, va, te = (fold == "train"), (fold == "valid"), (fold == "test")
    if not tr.any() or not va.any() or not te.any():
        raise ValueError(f"a split needs train, valid and test rows; got {int(tr.sum())}/{int(va.sum())}/{int(te.sum())}")
    mu, sd = X[tr].mean(0), X[tr].std(0)
    Z = (X - mu) / np.where(sd > 1e-8, sd, 1.0)
    if task == "regression":
        key, grid, model = "alpha", ALPHAS, Ridge()
    else:
        # the C path from strong to weak penalty, each fit starting from the previous solution
        # (warm start): the same optima in far fewer iterations (many-class tasks, e.g. remote homology)
        key, grid, model = "C", CS, LogisticRegression(max_iter=500, random_state=seed, warm_start=True)
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for value in grid:
            model.set_params(**{key: value}).fit(Z[tr], y[tr])
            v = compute_metric(metric, y[va], _predict(model, Z[va], task, metric))
            if best is None or is_better(metric, v, best[0]):
                best = (v, key, value, copy.deepcopy(model))
    v, key, value, model = best
    test = compute_metric(metric, y[te], _predict(model, Z[te], task, metric))
    return ProbeResult(test=test, valid=v, hyper={key: value}, n={"train": int(tr.sum()), "valid": int(va.sum()), "test": int(te.sum())})
