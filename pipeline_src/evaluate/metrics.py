"""Task metrics, by the names the registry uses."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, roc_auc_score

from ..paths import HIGHER_IS_BETTER  # noqa: F401 (metric directions live with result naming)


def compute_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``y_pred``: scores of the positive class (roc_auc), class ids (accuracy) or values."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if name == "rmse":
        return float(np.sqrt(np.mean((y_true.astype(float) - y_pred.astype(float)) ** 2)))
    if name == "roc_auc":
        if len(np.unique(y_true)) < 2:
            raise ValueError("ROC-AUC is undefined: the evaluated fold holds one class only")
        return float(roc_auc_score(y_true, y_pred))
    if name == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if name == "spearman":
        rho = spearmanr(y_true, y_pred).statistic
        return float(rho) if np.isfinite(rho) else 0.0
    raise ValueError(f"unknown metric {name!r} (known: {', '.join(HIGHER_IS_BETTER)})")


def task_metrics(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> list[float | None]:
    """Per column of ``[n, T]`` labels (NaN = missing, masked out): the metric on the labelled
    rows, ``None`` where it is undefined (no labels; one class only for ROC-AUC)."""
    out: list[float | None] = []
    for t in range(y_true.shape[1]):
        lab = ~np.isnan(y_true[:, t])
        yt = y_true[lab, t]
        if not lab.any() or (name == "roc_auc" and len(np.unique(yt)) < 2):
            out.append(None)
            continue
        out.append(compute_metric(name, yt if name in ("rmse", "spearman") else yt.astype(np.int64), y_pred[lab, t]))
    return out


def mean_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """:func:`compute_metric` for one label column; for ``[n, T]`` labels the mean over the tasks
    where the metric is defined (as MoleculeNet averages its multi-task sets)."""
    if np.ndim(y_true) == 1:
        return compute_metric(name, y_true, y_pred)
    vals = [v for v in task_metrics(name, y_true, y_pred) if v is not None]
    if not vals:
        raise ValueError(f"{name} is undefined on every task of the evaluated fold")
    return float(np.mean(vals))


def is_better(metric: str, a: float, b: float) -> bool:
    """Is score ``a`` better than ``b``?"""
    return a > b if HIGHER_IS_BETTER[metric] else a < b
