"""The `evaluate` command: one result JSON per (dataset, method, protocol, split, seed).

Results land in ``data/results/<dataset>/<method>/<protocol>/<split>/seed<k>.json`` and record the
metric on test (and on valid, where the model was selected), the chosen hyperparameters, the
fold sizes, and provenance: settings hash, checkpoint sha256, git commit, seed, wall time, device.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..config import ConfigError, config_hash, domain_of, finetune_config, load_config, load_registry
from ..data.atomic import write_json_atomic
from ..data.encode import load_encoded

PROTOCOLS = ("linear", "finetune", "classical")


def git_commit() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip())
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def eval_rows(table_ids: np.ndarray, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Row positions evaluated: all, or a fixed subset of ``max_rows`` chosen by a seeded hash of
    the ids (independent of the split, so every split and method sees the same rows)."""
    if max_rows is None or len(table_ids) <= max_rows:
        return np.arange(len(table_ids))
    keys = np.array([hashlib.blake2b(f"maskbench-eval-rows:{seed}:{i}".encode(), digest_size=8).hexdigest() for i in table_ids])
    return np.sort(np.argsort(keys, kind="stable")[:max_rows])


def _table(processed: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(processed / "table.parquet", columns=columns).to_pandas()


def run_features(cfg: dict[str, Any], model_path: str, processed: Path, out: str, device: str | None = None) -> str:
    """Pooled frozen-encoder features of the evaluated rows -> ``out`` (.npz with ids, X); returns the device."""
    from ..train.devices import pick_device
    from ..train.loop import load_pretrained
    from .features import extract_features

    ev = cfg["evaluate"]
    data = load_encoded(processed)
    rows = eval_rows(data.ids, ev["max_rows"])
    encoder, meta = load_pretrained(model_path, encoder_only=True)
    dev = pick_device(device)
    X = extract_features(encoder, data.subset(rows), int(meta["max_len"]), ev["feature_batch_size"], dev)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_suffix(".tmp.npz")
    np.savez(tmp, ids=data.ids[rows].astype(str), X=X)
    tmp.replace(out)
    return str(dev)


def _labels_and_folds(processed: Path, split_file: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from .multitask import read_labels

    y = read_labels(processed, ids)  # [n]; [n, T] with NaN for a multi-task set
    s = pq.read_table(split_file).to_pandas().set_index("id")
    fold = s.loc[ids, "fold"].astype(str).to_numpy()
    return y, fold


def run_evaluate(config_path: str, dataset: str, method: str, protocol: str, processed: str, outs: list[str],
                 features: str | None = None, model: str | None = None, device: str | None = None,
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Write every result of ``outs``: paths ``.../<split>/seed<k>.json`` that name the split (read
    from ``<processed>/splits/<split>.parquet``) and the seed of each run.

    ``linear`` first computes the frozen features of ``model`` into ``features`` (once for all
    runs); ``classical`` reads the table once; ``finetune`` trains the encoder per run.
    """
    from ..report.aggregate import parse_result_path

    cfg = load_config(config_path)
    entry = load_registry(cfg["registry"])[dataset]
    task, metric = entry["task"], entry["metric"]
    ev = cfg["evaluate"]
    processed_p = Path(processed)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    runs = []
    for out in outs:
        try:
            key = parse_result_path(Path(dataset) / method / protocol / Path(out).parent.name / Path(out).name)
        except ValueError as e:
            raise ConfigError(f"--out {out}: {e}") from None
        runs.append((out, key.split, key.seed))
    if threads and protocol != "classical":
        import torch

        torch.set_num_threads(threads)
    shared: dict[str, Any] = {}
    device_used = "cpu"
    t_shared = time.time()
    if protocol == "linear":
        if not features or not model:
            raise ConfigError("the linear protocol needs --features (written here) and --model")
        device_used = run_features(cfg, model, processed_p, features, device)
        f = np.load(features, allow_pickle=False)
        shared = {"ids": f["ids"], "X": f["X"], "provenance": {"features_sha256": file_sha256(features),
                                                                "checkpoint_sha256": file_sha256(model)}}
        print(f"{dataset}/{method}: features {shared['X'].shape} in {time.time() - t_shared:.1f}s", flush=True)
    elif protocol == "finetune":
        if not model:
            raise ConfigError("the finetune protocol needs --model")
        data = load_encoded(processed_p)
        shared = {"data": data.subset(eval_rows(data.ids, ev["max_rows"])),
                  "provenance": {"checkpoint_sha256": file_sha256(model)}}
    else:
        from .baselines import BASELINES

        if method not in BASELINES:
            raise ConfigError(f"no classical baseline named {method!r} (known: {', '.join(BASELINES)})")
        table = _table(processed_p)
        rows = eval_rows(table["id"].to_numpy(), ev["max_rows"])
        shared = {"table": table.iloc[rows].reset_index(drop=True), "provenance": {}}
    shared_s = time.time() - t_shared
    results = []
    for out, split, seed in runs:
        t0 = time.time()
        split_file = processed_p / "splits" / f"{split}.parquet"
        if protocol == "linear":
            from .linear import linear_probe

            y, fold = _labels_and_folds(processed_p, split_file, shared["ids"])
            res = linear_probe(shared["X"], y, fold, task, metric, seed)
        elif protocol == "finetune":
            from ..train.devices import pick_device, seed_everything
            from ..train.loop import load_pretrained
            from .finetune import finetune

            seed_everything(seed, threads)
            data = shared["data"]
            y, fold = _labels_and_folds(processed_p, split_file, data.ids)
            encoder, meta = load_pretrained(model, encoder_only=True)
            dev = pick_device(device)
            device_used = str(dev)
            res = finetune(encoder, int(meta["model_cfg"]["dim"]), data, y, fold, task, metric,
                           finetune_config(cfg, domain_of(cfg, dataset)), int(meta["max_len"]), seed, dev)
        else:
            from .baselines import BASELINES

            table = shared["table"]
            y, fold = _labels_and_folds(processed_p, split_file, table["id"].to_numpy())
            res = BASELINES[method][1](table, y, fold, task, metric, seed, threads or 1)
        result = {
            "dataset": dataset, "method": method, "protocol": protocol, "split": split, "seed": seed,
            "metric": metric, "test": res.test, "valid": res.valid, "hyper": res.hyper, "n": res.n,
            **_task_values(res, processed_p),
            "settings_hash": config_hash({"evaluate": ev, "domain": cfg["domains"][domain_of(cfg, dataset)]}),
            "git": git_commit(), "wall_time_s": round(time.time() - t0 + shared_s / len(runs), 3),
            "device": device_used, "host": platform.node(), "python": platform.python_version(), **shared["provenance"],
        }
        result = json.loads(json.dumps(result, default=_json_default))  # numpy scalars -> JSON types
        write_json_atomic(out, result)
        print(f"{dataset}/{method}/{protocol}/{split}/seed{seed}: {metric} {result['test']:.4f} -> {out}", flush=True)
        results.append(result)
    return results


def _task_values(res: Any, processed: Path) -> dict[str, Any]:
    from .multitask import task_values

    return task_values(res, processed)  # per-task values of a multi-task set, else nothing


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
