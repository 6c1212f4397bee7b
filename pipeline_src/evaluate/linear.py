"""Linear probe on frozen features (the MetaMAE / DABS protocol).

Features are standardized with train-fold statistics; the regularization strength is chosen on
the validation fold (never on test); the chosen model is then scored on test.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from .metrics import compute_metric, is_better

ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)   # ridge penalty
CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)                # inverse logistic penalty
# the logistic solver (lbfgs, multinomial) and its stopping rule: see config/README.md, "Linear probe
# solver", for the iterations and seconds measured on every task of config/paper.yaml
SOLVER, MAX_ITER, TOL = "lbfgs", 2000, 1e-4


@dataclass
class ProbeResult:
    test: float
    valid: float
    hyper: dict
    n: dict
    tasks: list[dict] | None = None   # several label columns: per-task values (multitask.per_task)
    probe: dict | None = None         # the solver's record: solver, max_iter, n_iter, converged, grid


def _fit(model, key: str, value: float, X: np.ndarray, y: np.ndarray) -> dict:
    """Fit ``model`` with ``key=value``; its solver record: iterations (the most over the
    classes' fits), whether it converged (iterations below max_iter and no ConvergenceWarning), seconds."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.set_params(**{key: value}).fit(X, y)
    n_iter = getattr(model, "n_iter_", None)
    n_iter = None if n_iter is None else int(np.max(n_iter))
    max_iter = getattr(model, "max_iter", None)
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    converged = not warned and (n_iter is None or max_iter is None or n_iter < max_iter)
    return {key: value, "n_iter": n_iter, "converged": bool(converged), "seconds": round(time.perf_counter() - t0, 3)}


def probe_record(solver: str, max_iter: int | None, tol: float | None, grid: list[dict], chosen: int) -> dict:
    """``probe`` of a result JSON: the chosen fit's iterations and convergence, and every grid fit's."""
    return {"solver": solver, "max_iter": max_iter, "tol": tol, "n_iter": grid[chosen]["n_iter"],
            "converged": all(g["converged"] for g in grid), "chosen_converged": grid[chosen]["converged"],
            "grid": grid}


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
    if task == "regression":   # closed form (cholesky on dense features): no iterations to converge
        key, grid, model, solver, max_iter, tol = "alpha", ALPHAS, Ridge(), "ridge, closed form", None, None
    else:
        # the C path from strong to weak penalty, each fit starting from the previous solution
        # (warm start): the same optima in far fewer iterations (many-class tasks, e.g. remote homology)
        key, grid, solver, max_iter, tol = "C", CS, SOLVER, MAX_ITER, TOL
        model = LogisticRegression(solver=SOLVER, max_iter=MAX_ITER, tol=TOL, random_state=seed, warm_start=True)
    best, fits = None, []
    for i, value in enumerate(grid):
        fits.append(_fit(model, key, value, Z[tr], y[tr]))
        v = compute_metric(metric, y[va], _predict(model, Z[va], task, metric))
        if best is None or is_better(metric, v, best[0]):
            best = (v, key, value, copy.deepcopy(model), i)
    v, key, value, model, chosen = best
    test = compute_metric(metric, y[te], _predict(model, Z[te], task, metric))
    return ProbeResult(test=test, valid=v, hyper={key: value}, n={"train": int(tr.sum()), "valid": int(va.sum()), "test": int(te.sum())},
                       probe=probe_record(solver, max_iter, tol, fits, chosen))
