"""Measure SMA's mask warm-up: held-out ratio and mask diversity with and without it.

Each variant sets a guided method's ``warmup_style`` and ``warmup_steps`` (as a fraction of the
domain's pretraining steps) in the run config (``domains.<d>.methods.<method>``); every (domain,
variant, seed) is pretrained with the real ``pretrain`` command into a temporary folder, and the
diagnostic ratio and the ``mask_diversity`` record of its ``meta.json`` are appended to ``--out``
(JSON lines, one per run, written as each run ends). A markdown table (mean ± std over seeds) is
printed at the end, and by ``--table`` from an existing results file.

    python scripts/sma_warmup_sweep.py --domains physics chemistry --method sma --seeds 0 1 2 \\
        --variant none:0 --variant mixed:0.25 --variant per_sample:0.25 \\
        --processed-root data/processed --threads 1 --out sma_warmup.jsonl
    python scripts/sma_warmup_sweep.py --at-init --domains physics chemistry --out sma_warmup.jsonl   # before any step
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_src.config import load_config  # noqa: E402


def variant_config(base: dict, domain: str, method: str, style: str, fraction: float) -> tuple[dict, int]:
    """A copy of ``base`` with the warm-up set for ``method`` on ``domain``; (config, warm-up steps)."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    d = cfg["domains"][domain]
    steps = int({**d["pretrain"], **d.get("pretrain_by_method", {}).get(method, {})}["steps"])
    warm = int(round(fraction * steps))
    over = d.setdefault("methods", {}).setdefault(method, {})
    over["warmup_steps"] = warm
    over["warmup_style"] = "per_sample" if style == "none" else style
    return cfg, warm


def run_one(cfg: dict, corpus: str, method: str, seed: int, processed: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        out = Path(tmp) / "ckpt"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline_src", "pretrain", "--config", str(cfg_path), "--corpus", corpus,
                        "--method", method, "--seed", str(seed), "--processed", str(processed), "--out", str(out),
                        "--threads", str(threads), "--device", "cpu"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        job_s = time.perf_counter() - t0
        meta = json.loads((out / "meta.json").read_text())
    return {"meta": meta, "job_s": job_s}


def at_init(base: dict, domain: str, method: str, seeds: list[int], processed_root: Path) -> list[dict]:
    """The mask diversity of the freshly initialized (seeded) model of each seed, before any step,
    on the same held-out slice and with the same function as a pretraining job's end."""
    import torch

    from pipeline_src.spec import resolve_pretrain, thaw
    from pipeline_src.train.devices import seed_everything
    from pipeline_src.train.diversity import mask_diversity
    from pipeline_src.train.pretrain import _build, load_corpus, split_corpus

    corpus = base["domains"][domain]["corpus"]
    job = resolve_pretrain(base, corpus, method)
    full = load_corpus(processed_root / corpus)
    rows = []
    for seed in seeds:
        held, data = split_corpus(full, job, seed)
        seed_everything(seed, 1)
        model = _build(method, data.spec(job.max_len), thaw(job.model), thaw(job.method_cfg))
        div = mask_diversity(model, held, job.max_len, int(job.diagnostic["batch_size"]), torch.device("cpu"), step=None)
        rows.append({"domain": domain, "corpus": corpus, "method": method, "variant": "at initialization",
                     "fraction": 0.0, "warmup_steps": 0, "seed": seed, "steps": 0, "ratio": None, "mask_diversity": div})
    return rows


def _ms(xs: list[float | None], digits: int = 3) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds per (domain, method, variant), in the order first seen."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["domain"], r["method"], r["variant"], r["warmup_steps"]), []).append(r)
    out = ["| domain | method | warm-up | held-out loss / baseline | masking entropy (random) | Jaccard of two views "
           "(random) | identical pairs | distinct masks / samples | collapsed seeds |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for (dom, method, variant, warm), g in groups.items():
        div = [r["mask_diversity"] for r in g]
        col = [str(r["seed"]) for r in g if r["mask_diversity"]["verdict"] == "collapsed"]
        what = variant if variant == "at initialization" else f"{variant} ({warm} steps)"
        out.append(f"| {dom} | {method} | {what} | {_ms([r['ratio'] for r in g])} | "
                   f"{_ms([d['method']['entropy'] for d in div], 2)} ({_ms([d['random']['entropy'] for d in div], 2)}) | "
                   f"{_ms([d['method']['jaccard'] for d in div], 2)} ({_ms([d['random']['jaccard'] for d in div], 2)}) | "
                   f"{_ms([d['method']['identical_share'] for d in div], 2)} | "
                   f"{_ms([d['method']['distinct_share'] for d in div], 2)} | "
                   f"{len(col)} of {len(g)}" + (f" ({', '.join(col)})" if col else "") + " |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--domains", nargs="+", default=["physics", "chemistry"])
    p.add_argument("--method", default="sma")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variant", action="append", default=None,
                   help="STYLE:FRACTION, STYLE none, mixed or per_sample; FRACTION of the pretraining steps")
    p.add_argument("--processed-root", default="data/processed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="sma_warmup.jsonl", help="JSON lines, appended run by run")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    p.add_argument("--at-init", action="store_true", help="only the mask diversity of each seed's untrained model")
    a = p.parse_args()
    out = Path(a.out)
    if a.table:
        print(table([json.loads(line) for line in out.read_text().splitlines() if line.strip()]))
        return 0
    variants = a.variant or ["none:0", "mixed:0.1", "mixed:0.25", "per_sample:0.25"]
    base = load_config(a.config)
    if a.at_init:
        rows = [r for d in a.domains for r in at_init(base, d, a.method, a.seeds, Path(a.processed_root))]
        with out.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(table(rows))
        return 0
    rows = []
    for domain in a.domains:
        corpus = base["domains"][domain]["corpus"]
        for v in variants:
            style, frac = v.split(":")
            cfg, warm = variant_config(base, domain, a.method, style, float(frac))
            for seed in a.seeds:
                res = run_one(cfg, corpus, a.method, seed, Path(a.processed_root) / corpus, a.threads)
                meta = res["meta"]
                row = {"domain": domain, "corpus": corpus, "method": a.method, "variant": style if warm else "none",
                       "fraction": float(frac), "warmup_steps": warm, "seed": seed, "steps": meta["steps"],
                       "ratio": meta["diagnostic"]["ratio"], "mask_diversity": meta["mask_diversity"],
                       "train_s": meta["wall_time_s"], "job_s": res["job_s"]}
                rows.append(row)
                with out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{domain} {a.method} {v} seed {seed}: ratio {row['ratio']:.3f}, "
                      f"verdict {row['mask_diversity']['verdict']}, {res['job_s']:.0f} s", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
