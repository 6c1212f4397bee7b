"""Measure pretraining recipes for a domain: held-out reconstruction ratio and training time.

Each candidate is a set of dotted overrides of the run config (e.g.
``domains.chemistry.pretrain.lr=1e-3``); each is pretrained with the real ``pretrain`` command into
a temporary folder, and the diagnostic from its ``model.pt`` is printed with the training time.

    python scripts/recipe_sweep.py --domain chemistry --method random --threads 1 \\
        --candidate "domains.chemistry.pretrain.lr=1e-3 domains.chemistry.pretrain.steps=1000" \\
        --candidate "domains.chemistry.pretrain.lr=3e-4"
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_src.config import load_config  # noqa: E402


def _set(cfg: dict, dotted: str, value: str) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        cfg = cfg.setdefault(k, {})
    v = yaml.safe_load(value)
    if isinstance(v, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            v = float(v)
        except ValueError:
            pass
    cfg[keys[-1]] = v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--domain", required=True)
    p.add_argument("--method", default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--candidate", action="append", required=True, help="space-separated key=value overrides")
    a = p.parse_args()
    base = load_config(a.config)
    corpus = base["domains"][a.domain]["corpus"]
    print("| candidate | steps | held-out loss | baseline | ratio | training s | job s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cand in a.candidate:
        cfg = yaml.safe_load(yaml.safe_dump(base))
        for kv in cand.split():
            k, v = kv.split("=", 1)
            _set(cfg, k, v)
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            out = Path(tmp) / "ckpt"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline_src", "pretrain", "--config", str(cfg_path), "--corpus", corpus,
                            "--method", a.method, "--seed", str(a.seed), "--processed", f"data/processed/{corpus}",
                            "--out", str(out), "--threads", str(a.threads), "--device", "cpu"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            job_s = time.perf_counter() - t0
            meta = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["meta"]
        d = meta["diagnostic"]
        print(f"| {cand} | {meta['steps']} | {d['heldout_loss']:.3f} | {d['baseline']:.3f} | {d['ratio']:.3f} | "
              f"{meta['wall_time_s']:.0f} | {job_s:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
