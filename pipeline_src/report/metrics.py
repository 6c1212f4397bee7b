"""``python -m pipeline_src metrics``: the headline numbers and loss curves in DVC's formats.

- ``reports/metrics.json``: ``{dataset: {split_kind: {method: {protocol: mean}}}}``, the mean test
  metric of each report cell (same aggregation as the report: over seeds and seeded splits of one
  kind); ``dvc metrics show`` / ``dvc metrics diff`` read it.
- ``reports/plots/pretrain_loss/<corpus>_<method>_seed<k>.csv``: ``step,loss`` from each pretraining
  ``log.jsonl`` (DVC plots read CSV, not JSON lines); ``dvc plots show`` draws them.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..atomic import write_bytes_atomic
from ..paths import log_path
from .aggregate import aggregate, load_results, parse_result_path, restrict_to


def headline_metrics(results_root: str | Path, expected: list[str] | None = None,
                     planned: list | None = None) -> dict[str, Any]:
    """Nested ``dataset -> split kind -> method -> protocol -> mean`` (finite values only), over the
    planned results (``expected`` paths, or ``planned`` keys)."""
    results = load_results(results_root)
    if expected is not None:
        results = restrict_to(results, [parse_result_path(p) for p in expected])
    elif planned is not None:
        results = restrict_to(results, planned)
    out: dict[str, Any] = {}
    for r in aggregate(results).itertuples(index=False):
        mean = float(r.mean)
        if not math.isfinite(mean):
            continue
        out.setdefault(r.dataset, {}).setdefault(r.split_kind, {}).setdefault(r.method, {})[r.protocol] = round(mean, 6)
    return out


def loss_tables(checkpoints_root: str | Path, runs: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], str]:
    """(corpus, method, seed) -> CSV text ``step,loss`` from its ``log.jsonl``; runs without a log are left out."""
    from .compute import read_loss_log

    out = {}
    for corpus, method, seed in runs:
        df = read_loss_log(log_path(corpus, method, seed, checkpoints_root))
        if df.empty:
            continue
        df = df[["step", "loss"]].dropna().sort_values("step", kind="stable")
        out[(corpus, method, seed)] = df.to_csv(index=False, lineterminator="\n")
    return out


def write_metrics(config_path: str | Path, out_json: str | Path = "reports/metrics.json",
                  plots_dir: str | Path = "reports/plots", results_root: str | Path = "data/results",
                  checkpoints_root: str | Path = "data/checkpoints", expected: list[str] | None = None) -> None:
    from ..config import load_config

    from ..config import load_registry
    from ..plan import planned_results

    cfg = load_config(config_path)
    planned = None if expected is not None else planned_results(cfg, load_registry(cfg["registry"]))
    metrics = headline_metrics(results_root, expected, planned)
    write_bytes_atomic(Path(out_json), (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    loss_dir = Path(plots_dir) / "pretrain_loss"
    loss_dir.mkdir(parents=True, exist_ok=True)
    from ..plan import pretrain_seeds

    runs = [(d["corpus"], m, k) for dom, d in cfg["domains"].items() for m in cfg.get("methods_run", []) if m != "none"
            for k in pretrain_seeds(cfg, dom)]
    for (corpus, method, seed), text in loss_tables(checkpoints_root, list(dict.fromkeys(runs))).items():
        write_bytes_atomic(loss_dir / f"{corpus}_{method}_seed{seed}.csv", text.encode("utf-8"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the (effective) run config")
    p.add_argument("--results", default="data/results")
    p.add_argument("--checkpoints", default="data/checkpoints")
    p.add_argument("--expected-file", help="text file with the planned result paths, one per line")
    p.add_argument("--out", default="reports/metrics.json")
    p.add_argument("--plots-dir", default="reports/plots")


def main_from_args(a: argparse.Namespace) -> None:
    from .build import read_expected

    expected = read_expected(a.expected_file) if a.expected_file else None
    write_metrics(a.config, a.out, a.plots_dir, a.results, a.checkpoints, expected)
