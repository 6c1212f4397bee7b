"""Compute cost: Snakemake benchmark TSVs and the pretraining metadata saved in ``model.pt``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..paths import meta_path

# meta.json's mask_diversity (pipeline_src/train/diversity.py): the method's two draws and the random reference
DIVERSITY_COLUMNS = ["mask_unit", "mask_entropy", "random_entropy", "entropy_ratio", "mask_jaccard", "random_jaccard",
                     "identical_share", "random_identical_share", "distinct_share", "mask_verdict", "mask_reasons"]
COST_COLUMNS = ["domain", "corpus", "method", "seed", "steps", "job_wall_s", "train_wall_s", "tokens_per_s",
                "peak_memory_mb", "max_rss_mb", "final_loss", "baseline", "final_loss_ratio", "heldout_loss",
                "heldout_ratio", "reference_ratio", "device", "domain_agnostic", "adapted_ratio", "scoring", *DIVERSITY_COLUMNS]


def read_benchmark(path: str | Path) -> dict[str, float] | None:
    """The first (usually only) row of a Snakemake benchmark TSV, numbers as floats."""
    try:
        df = pd.read_csv(path, sep="\t")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    if df.empty:
        return None
    row = df.iloc[0].to_dict()
    out: dict[str, float] = {}
    for k, v in row.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def total_wall_time(benchmarks_root: str | Path) -> dict[str, Any]:
    """Sum of every benchmark's ``s`` (job time, summed over jobs that may have run in parallel)
    and the span from the earliest to the latest benchmark file's mtime (roughly elapsed time)."""
    files = sorted(Path(benchmarks_root).rglob("*.tsv")) if Path(benchmarks_root).exists() else []
    total, jobs = 0.0, 0
    mtimes = []
    for f in files:
        b = read_benchmark(f)
        if b is None or "s" not in b:
            continue
        total += b["s"]
        jobs += 1
        mtimes.append(f.stat().st_mtime)
        mtimes.append(f.stat().st_mtime - b["s"])  # the job started about s seconds before it wrote the file
    span = (max(mtimes) - min(mtimes)) if mtimes else 0.0
    return {"jobs": jobs, "sum_s": total, "span_s": span}


def _meta(meta_path: Path) -> dict[str, Any] | None:
    """A pretraining job's ``meta.json`` (None when missing or unreadable)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def diversity_row(meta: dict[str, Any]) -> dict[str, Any]:
    """The report's columns of a meta.json's ``mask_diversity`` (None everywhere when absent: a
    method without masks, or a checkpoint written before it was recorded)."""
    div = meta.get("mask_diversity") if isinstance(meta.get("mask_diversity"), dict) else None
    if div is None:
        return {k: None for k in DIVERSITY_COLUMNS}
    mine, ref = div.get("method") or {}, div.get("random") or {}
    return {"mask_unit": div.get("unit"), "mask_entropy": _num(mine.get("entropy")),
            "random_entropy": _num(ref.get("entropy")), "entropy_ratio": _num(div.get("entropy_ratio")),
            "mask_jaccard": _num(mine.get("jaccard")), "random_jaccard": _num(ref.get("jaccard")),
            "identical_share": _num(mine.get("identical_share")),
            "random_identical_share": _num(ref.get("identical_share")),
            "distinct_share": _num(mine.get("distinct_share")), "mask_verdict": div.get("verdict"),
            "mask_reasons": "; ".join(div.get("reasons") or []) or None}


def pretrain_costs(cfg: dict[str, Any], checkpoints_root: str | Path = "data/checkpoints",
                   benchmarks_root: str | Path = "data/benchmarks") -> tuple[pd.DataFrame, dict[tuple[str, str, int], dict]]:
    """One row per (domain, corpus, method, seed) of the config, with the held-out diagnostic
    (held-out masked-token loss, the corpus's frequency baseline and their ratio; the final training
    loss over the same baseline); also the metas found, by (corpus, method, seed)."""
    from ..plan import pretrain_seeds

    rows, metas = [], {}
    for domain, d in cfg.get("domains", {}).items():
        corpus = d["corpus"]
        for method in cfg.get("methods_run", []):
            for seed in pretrain_seeds(cfg, domain):
                meta = _meta(Path(meta_path(corpus, method, seed, checkpoints_root)))
                bench = read_benchmark(Path(benchmarks_root) / "pretrain" / corpus / method / f"seed{seed}.tsv")
                if meta is not None:
                    metas[(corpus, method, seed)] = meta
                m = meta or {}
                diag = m.get("diagnostic") or {}
                peak = _num(m.get("peak_memory_bytes"))
                base, final = _num(diag.get("baseline")), _num(m.get("final_loss"))
                rows.append({
                    "domain": domain, "corpus": corpus, "method": method, "seed": seed,
                    "steps": m.get("steps"),
                    "job_wall_s": (bench or {}).get("s"),
                    "train_wall_s": _num(m.get("wall_time_s")),
                    "tokens_per_s": _num(m.get("tokens_per_s")),
                    "peak_memory_mb": peak / 2**20 if peak else None,
                    "max_rss_mb": (bench or {}).get("max_rss"),
                    "final_loss": final,
                    "baseline": base,
                    "final_loss_ratio": final / base if final is not None and base else None,
                    "heldout_loss": _num(diag.get("heldout_loss")),
                    "heldout_ratio": _num(diag.get("ratio")),
                    "reference_ratio": _num(diag.get("reference_ratio")),
                    "device": m.get("device"),
                    "domain_agnostic": m.get("domain_agnostic"),
                    "adapted_ratio": _num(diag.get("adapted_ratio")),   # the method's own adaptation (MetaMAE)
                    "scoring": diag.get("scoring"),
                    **diversity_row(m),
                })
    df = pd.DataFrame(rows, columns=COST_COLUMNS)
    df["steps"] = df["steps"].astype("Int64")
    return df, metas


def read_loss_log(path: str | Path) -> pd.DataFrame:
    """``log.jsonl`` -> DataFrame with at least step and loss (empty when there is no log)."""
    recs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and "step" in r and "loss" in r:
            recs.append(r)
    return pd.DataFrame(recs, columns=sorted({"step", "loss", *(k for r in recs for k in r)}))
