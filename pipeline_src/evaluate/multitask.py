"""Several label columns (multi-task sets such as Tox21 or ClinTox).

A processed table names its label columns in its metadata (``maskbench.labels``; one column
``label`` when absent). With several, labels are read as ``[n, T]`` float with NaN where a label
is missing; each task is fit and scored on its labelled rows only (missing labels are masked out
of losses and metrics), and the reported metric is the mean over tasks, as MoleculeNet reports
it. A task that cannot be scored on a split (no labelled rows in a fold, one class only in train,
or, for ROC-AUC, in valid or test) is left out of the mean and recorded with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

from ..data.prepare import LABELS_METADATA

FOLDS = ("train", "valid", "test")


def label_columns(processed: str | Path) -> list[str]:
    """The label columns of a processed task table."""
    meta = pq.read_schema(Path(processed) / "table.parquet").metadata or {}
    if LABELS_METADATA in meta:
        return list(json.loads(meta[LABELS_METADATA]))
    return ["label"]


def read_labels(processed: str | Path, ids: np.ndarray) -> np.ndarray:
    """Labels of the rows ``ids``: ``[n]`` for one label column (as stored), ``[n, T]`` float64
    with NaN for missing labels for several."""
    cols = label_columns(processed)
    t = pq.read_table(Path(processed) / "table.parquet", columns=["id", *cols]).to_pandas().set_index("id")
    if len(cols) == 1:
        return t.loc[ids, cols[0]].to_numpy()
    return t.loc[ids, cols].to_numpy(dtype=np.float64)


def unscorable(y: np.ndarray, fold: np.ndarray, task: str, metric: str) -> str | None:
    """Why one task (labels ``y`` [n], NaN = missing) cannot be fit and scored, or ``None``."""
    lab = ~np.isnan(y)
    for f in FOLDS:
        if not (lab & (fold == f)).any():
            return f"no labelled {f} rows"
    if task != "regression":
        if len(np.unique(y[lab & (fold == "train")])) < 2:
            return "one class only among the labelled train rows"
        if metric == "roc_auc":
            for f in ("valid", "test"):
                if len(np.unique(y[lab & (fold == f)])) < 2:
                    return f"one class only among the labelled {f} rows (ROC-AUC undefined)"
    return None


def per_task(fit: Callable[[np.ndarray, np.ndarray], Any], y: np.ndarray, fold: np.ndarray, task: str, metric: str):
    """Fit and score each column of ``y`` [n, T] on its labelled rows.

    ``fit(rows, y_t)`` gets the boolean row mask [n] of the task's labelled rows and their labels
    (int64 for classification) and returns a ``ProbeResult``. Returns one ``ProbeResult``:
    ``test`` / ``valid`` the means over the scored tasks, ``tasks`` one dict per column.
    """
    from .linear import ProbeResult

    if task == "multiclass":
        raise ValueError("a multiclass task takes one label column; several are supported for regression and binary tasks")
    tasks: list[dict[str, Any]] = []
    for t in range(y.shape[1]):
        yt = y[:, t]
        why = unscorable(yt, fold, task, metric)
        if why is not None:
            tasks.append({"skipped": why})
            continue
        rows = ~np.isnan(yt)
        lab = yt[rows] if task == "regression" else yt[rows].astype(np.int64)
        r = fit(rows, lab)
        tasks.append({"test": float(r.test), "valid": float(r.valid), "hyper": r.hyper, "n": r.n,
                      **({"probe": r.probe} if getattr(r, "probe", None) else {})})
    scored = [d for d in tasks if "skipped" not in d]
    if not scored:
        raise ValueError("no task of the multi-task set can be scored on this split: "
                         + "; ".join(f"task {i}: {d['skipped']}" for i, d in enumerate(tasks)))
    any_label = ~np.all(np.isnan(y), axis=1)
    return ProbeResult(test=float(np.mean([d["test"] for d in scored])),
                       valid=float(np.mean([d["valid"] for d in scored])),
                       hyper={"tasks_scored": len(scored), "tasks": y.shape[1]},
                       n={f: int((any_label & (fold == f)).sum()) for f in FOLDS}, tasks=tasks,
                       probe=_probes(scored))


def _probes(scored: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One ``probe`` record over the tasks' probes: converged only if every task's did."""
    probes = [d["probe"] for d in scored if d.get("probe")]
    if not probes:
        return None
    iters = [p["n_iter"] for p in probes if p.get("n_iter") is not None]
    return {"solver": probes[0]["solver"], "max_iter": probes[0]["max_iter"], "tol": probes[0]["tol"],
            "n_iter": max(iters) if iters else None, "converged": all(p["converged"] for p in probes),
            "chosen_converged": all(p["chosen_converged"] for p in probes), "per_task": "tasks.<label>.probe"}


def task_values(result: Any, processed: str | Path) -> dict[str, Any]:
    """``{"tasks": {label column: {test, valid, hyper, n} or {skipped}}}`` for a multi-task result
    (empty for one label column): the per-task values kept in the result JSON."""
    tasks = getattr(result, "tasks", None)
    if not tasks:
        return {}
    names = label_columns(processed)
    if len(names) != len(tasks):
        raise ValueError(f"{processed}: {len(tasks)} task results for {len(names)} label columns {names}")
    return {"tasks": dict(zip(names, tasks))}
