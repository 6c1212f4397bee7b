"""Result JSONs -> one DataFrame; mean ± std over the seeds and seeded splits of one kind.

A cell of the report is (dataset, method, protocol, split kind): the results of every (pretraining
seed, split) unit of that kind — ``scaffold_cv_r<r>_f<k>`` aggregate to ``scaffold_cv``,
``scaffold_balanced_seed<k>`` to ``scaffold_balanced``; ``scaffold`` and ``fixed`` repeat over the
pretraining seeds. ``std`` is the sample standard deviation (ddof = 1), NaN when n = 1.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..paths import ResultKey, parse_result_path, split_kind  # noqa: F401 (re-exported)

RESULT_COLUMNS = ["dataset", "method", "protocol", "split", "split_kind", "seed", "unit", "metric", "test", "valid",
                  "device", "wall_time_s", "settings_hash", "n_train", "n_valid", "n_test", "pos_train", "pos_valid", "pos_test",
                  "path", "probe_converged", "probe_n_iter", "probe_max_iter"]
CELL_KEY = ["dataset", "method", "protocol", "split_kind"]


def _count(r: dict[str, Any], key: str) -> float:
    v = (r.get("n") or {}).get(key) if isinstance(r.get("n"), dict) else None
    return float(v) if isinstance(v, (int, float)) else np.nan


def fold_sizes(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, split kind): the number of splits and the min–max rows of train (as used,
    after subsampling), valid and test over them, with positives for binary tasks."""
    cols = ["dataset", "split_kind", "splits", *[f"{p}_{k}_{e}" for p in ("n", "pos") for k in ("train", "valid", "test")
                                                  for e in ("min", "max")]]
    if results.empty:
        return pd.DataFrame(columns=cols)
    one = results.drop_duplicates(["dataset", "split"])
    g = one.groupby(["dataset", "split_kind"], sort=True)
    out = g["split"].nunique().rename("splits").to_frame()
    for p in ("n", "pos"):
        for k in ("train", "valid", "test"):
            out[f"{p}_{k}_min"] = g[f"{p}_{k}"].min()
            out[f"{p}_{k}_max"] = g[f"{p}_{k}"].max()
    return out.reset_index()[cols]


def _probe(r: dict[str, Any]) -> dict[str, Any]:
    """The linear solver's record of a result (``probe``): converged (True / False; None when not
    recorded or not a linear model), iterations of the chosen fit, max_iter."""
    probe = r.get("probe") if isinstance(r.get("probe"), dict) else {}
    conv = probe.get("converged")
    return {"probe_converged": bool(conv) if isinstance(conv, bool) else None,
            "probe_n_iter": probe.get("n_iter"), "probe_max_iter": probe.get("max_iter")}


def load_results(results_root: str | Path) -> pd.DataFrame:
    """Every ``seed<k>.json`` under ``results_root`` as one row; unreadable files are skipped."""
    rows: list[dict[str, Any]] = []
    root = Path(results_root)
    for p in sorted(root.glob("*/*/*/*/seed*.json")) if root.exists() else []:
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
            key = parse_result_path(p)
            test = float(r["test"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        valid = r.get("valid")
        rows.append({
            "dataset": r.get("dataset", key.dataset), "method": r.get("method", key.method),
            "protocol": r.get("protocol", key.protocol), "split": r.get("split", key.split),
            "split_kind": split_kind(str(r.get("split", key.split))), "seed": int(r.get("seed", key.seed)),
            "unit": key.unit,
            "metric": r.get("metric", ""), "test": test,
            "valid": float(valid) if isinstance(valid, (int, float)) else np.nan,
            "device": str(r.get("device", "")), "wall_time_s": float(r.get("wall_time_s") or 0.0),
            "settings_hash": str(r.get("settings_hash", "")),
            **{f"n_{k}": _count(r, k) for k in ("train", "valid", "test")},
            **{f"pos_{k}": _count(r, f"{k}_pos") for k in ("train", "valid", "test")},
            "path": p.as_posix(),
            **_probe(r),
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def restrict_to(results: pd.DataFrame, keys: list[ResultKey]) -> pd.DataFrame:
    """Only the rows whose (dataset, method, protocol, split, seed) is one of ``keys``."""
    wanted = {(k.dataset, k.method, k.protocol, k.split, k.seed) for k in keys}
    if results.empty:
        return results
    mask = [(d, m, p, s, int(k)) in wanted for d, m, p, s, k in
            results[["dataset", "method", "protocol", "split", "seed"]].itertuples(index=False)]
    return results[np.asarray(mask, dtype=bool)].reset_index(drop=True)


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, std (ddof = 1; NaN for n = 1), n runs, and the metric."""
    cols = [*CELL_KEY, "metric", "mean", "std", "n"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    g = results.groupby(CELL_KEY, sort=True)
    out = g["test"].agg(mean="mean", std=lambda s: float(np.std(s, ddof=1)) if len(s) > 1 else np.nan, n="count")
    out["metric"] = g["metric"].first()
    return out.reset_index()[cols]
