"""Builders of tiny report inputs (result JSONs, logs, checkpoints, processed corpora) for the
report tests. No tests here."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline_src.batch import InputSpec

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "config" / "datasets.yaml"
REFERENCE = ROOT / "config" / "reference_results.yaml"
MODEL = {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2, "max_len": 24,
         "decoder_dim": 16, "decoder_heads": 2}
PRETRAIN = {"steps": 20, "batch_size": 8, "lr": 1e-3}
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "O=C(O)c1ccccc1", "CC(C)Cc1ccc(C)cc1",
          "C1CCCCC1N", "COc1ccc(Cl)cc1", "CC#N", "OCC(O)CO"]
FEATURES = ["f_pt", "f_eta", "f_phi", "f_m", "f_b"]


def write_config(path: Path, **over) -> Path:
    cfg = {
        "registry": str(REGISTRY),
        "methods_run": ["none", "random", "sma", "span"],
        "seeds": [0, 1, 2],
        "pretrain_seeds": [0, 1, 2],
        "domains": {"chemistry": {"corpus": "moses", "corpus_subsample": 10, "tasks": ["esol", "bbbp"],
                                  "splits": ["scaffold", "scaffold_balanced"], "model": MODEL, "pretrain": PRETRAIN}},
        "evaluate": {"protocols": ["linear"], "baselines": True, "max_train_rows": 100},
        "methods": {"none": {}, "random": {"mask_ratio": 0.3}, "sma": {"mask_ratio": 0.3}, "span": {"mask_ratio": 0.3}},
    }
    cfg.update(over)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def settings_hash_for(config: Path, dataset: str, protocol: str) -> str:
    """The hash the evaluate command records for ``dataset`` / ``protocol`` under ``config``."""
    from pipeline_src.config import load_config, load_registry
    from pipeline_src.plan import eval_settings_hash

    cfg = load_config(config)
    return eval_settings_hash(cfg, load_registry(cfg["registry"]), dataset, protocol)


def write_result(root: Path, dataset: str, method: str, protocol: str, split: str, seed: int, test: float,
                 metric: str, settings_hash: str = "x", n: dict | None = None, **extra) -> Path:
    p = root / dataset / method / protocol / split / f"seed{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"dataset": dataset, "method": method, "protocol": protocol, "split": split, "seed": seed,
                             "metric": metric, "test": test, "valid": test, "hyper": {},
                             "n": n or {"train": 80, "valid": 10, "test": 10},
                             "settings_hash": settings_hash, "git": {"commit": "x"}, "wall_time_s": 1.0, "device": "cpu",
                             **extra}))
    return p


def write_log(path: Path, steps: int, start: float = 5.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "loss": start / (1 + 0.1 * s), "lr": 1e-3, "mask_ratio": 0.3,
                         "tokens_per_s": 100.0, "elapsed_s": 0.01 * s, "grad_norm": 1.0}) for s in range(1, steps + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_smiles_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": pa.array([f"m{i}" for i in range(len(SMILES))]),
                      "tokens": pa.array([list(s.encode()) for s in SMILES], type=pa.list_(pa.uint8()))})
    pq.write_table(table, d / "table.parquet")
    return d


def write_numeric_corpus(d: Path, n: int = 12) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cols = {f: rng.normal(size=n).astype(np.float32) for f in FEATURES}
    table = pa.table({"id": [f"e{i}" for i in range(n)], "fold": ["test"] * n, **cols})
    pq.write_table(table, d / "table.parquet")
    (d / "standardize.json").write_text(json.dumps({"features": FEATURES, "mean": {f: 0.0 for f in FEATURES},
                                                    "std": {f: 1.0 for f in FEATURES}}))
    return d


def write_model(path: Path, method: str, spec: InputSpec, model_cfg: dict, method_cfg: dict, seed: int = 0) -> Path:
    import torch

    from pipeline_src.methods import build_method
    from pipeline_src.train.diagnostic import SCORING
    from pipeline_src.train.loop import save_model_file

    torch.manual_seed(seed)
    m = build_method(method, spec, model_cfg, method_cfg)
    meta = {"method": method, "spec": asdict(spec), "model_cfg": model_cfg, "method_cfg": method_cfg,
            "max_len": spec.max_len, "seed": seed, "steps": 20, "final_loss": 1.25, "wall_time_s": 3.5,
            "tokens_per_s": 1234.0, "peak_memory_bytes": 50 * 2**20, "device": "cpu",
            "domain_agnostic": bool(getattr(m, "domain_agnostic", True)),
            "diagnostic": {"heldout_loss": 1.0, "baseline": 2.5, "ratio": 0.4, "reference_loss": 2.4,
                           "reference_ratio": 0.96, "heldout_samples": 10, "mask_ratio": 0.3, "scoring": SCORING,
                           "heldout_adapted_loss": 0.9 if method == "metamae" else None,
                           "adapted_ratio": 0.36 if method == "metamae" else None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(path, m, meta)
    return path
