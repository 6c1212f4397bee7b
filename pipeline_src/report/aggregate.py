"""Result JSONs -> one DataFrame; mean ± std over the seeds and seeded splits of one kind.

A cell of the report is (dataset, method, protocol, split kind): ``scaffold_balanced_seed0..2``
aggregate to ``scaffold_balanced``, ``random_seed<k>`` to ``random``; ``scaffold`` and ``fixed``
repeat over finetune seeds. ``std`` is the sample standard deviation (ddof = 1), NaN when n = 1.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULT_COLUMNS = ["dataset", "method", "protocol", "split", "split_kind", "seed", "metric", "test", "valid",
                  "device", "wall_time_s", "path"]
CELL_KEY = ["dataset", "method", "protocol", "split_kind"]
_SEED_SUFFIX = re.compile(r"_seed\d+$")
_SEED_FILE = re.compile(r"^seed(\d+)\.json$")


def split_kind(split: str) -> str:
    """``scaffold_balanced_seed2`` -> ``scaffold_balanced``; unseeded names unchanged."""
    return _SEED_SUFFIX.sub("", split)


@dataclass(frozen=True)
class ResultKey:
    dataset: str
    method: str
    protocol: str
    split: str
    seed: int

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.method, self.protocol, split_kind(self.split))

    def log_path(self, logs_root: str | Path = "data/logs") -> str:
        """Where the evaluate rule writes this run's log (``data/logs/evaluate/...``): one per
        fine-tuning run, one per (dataset, method) for the linear and classical protocols."""
        base = Path(logs_root) / "evaluate" / self.dataset / self.method
        if self.protocol == "finetune":
            return (base / self.protocol / self.split / f"seed{self.seed}.log").as_posix()
        return (base / f"{self.protocol}.log").as_posix()


def parse_result_path(path: str | Path) -> ResultKey:
    """``.../<dataset>/<method>/<protocol>/<split>/seed<k>.json`` -> its key."""
    parts = Path(path).parts
    if len(parts) < 5:
        raise ValueError(f"{path}: not a result path (<dataset>/<method>/<protocol>/<split>/seed<k>.json)")
    m = _SEED_FILE.match(parts[-1])
    if not m:
        raise ValueError(f"{path}: the file name must be seed<k>.json")
    return ResultKey(parts[-5], parts[-4], parts[-3], parts[-2], int(m.group(1)))


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
            "metric": r.get("metric", ""), "test": test,
            "valid": float(valid) if isinstance(valid, (int, float)) else np.nan,
            "device": str(r.get("device", "")), "wall_time_s": float(r.get("wall_time_s") or 0.0),
            "path": p.as_posix(),
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
