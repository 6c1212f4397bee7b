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

from ..atomic import write_json_atomic
from ..config import ConfigError
from ..data.encode import load_encoded
from ..paths import parse_result_path
from ..spec import EvalJob


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


def _row_keys(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.array([hashlib.blake2b(f"maskbench-train-rows:{seed}:{i}".encode(), digest_size=8).hexdigest() for i in ids])


def subsample_train(fold: np.ndarray, y: np.ndarray, keys: np.ndarray, max_train_rows: int | None,
                    stratify: bool) -> np.ndarray:
    """``fold`` with all but ``max_train_rows`` train rows marked ``unused``; valid and test are
    never touched. The kept rows are those with the smallest hash ``keys`` (fixed per row id, so
    every method and seed sees the same rows), per class in proportion to the class counts when
    ``stratify`` (largest remainders; every class present keeps at least one row)."""
    train = np.flatnonzero(fold == "train")
    if max_train_rows is None or len(train) <= max_train_rows:
        return fold
    if stratify and y.ndim == 1:  # a multi-task set ([n, T] labels) is subsampled by hash alone
        classes, counts = np.unique(y[train], return_counts=True)
        exact = counts * max_train_rows / len(train)
        quota = np.maximum(np.floor(exact).astype(int), 1)
        for i in np.argsort(-(exact - np.floor(exact)), kind="stable")[:max(0, max_train_rows - int(quota.sum()))]:
            quota[i] += 1
        keep = np.concatenate([train[y[train] == c][np.argsort(keys[train[y[train] == c]], kind="stable")[:q]]
                               for c, q in zip(classes, quota)])
    else:
        keep = train[np.argsort(keys[train], kind="stable")[:max_train_rows]]
    out = fold.astype(object).copy()
    out[train] = "unused"
    out[keep] = "train"
    return out


def check_class_counts(dataset: str, split: str, fold: np.ndarray, y: np.ndarray, metric: str, minimum: int = 10) -> None:
    """ROC-AUC needs at least ``minimum`` examples of each class in valid and test (the config's
    ``evaluate.min_class_examples``; fewer make the metric noise)."""
    if metric != "roc_auc" or y.ndim != 1:  # multi-task: each task's fold is checked when it is scored
        return
    for part in ("valid", "test"):
        yy = y[fold == part]
        for c in (0, 1):
            if int((yy == c).sum()) < minimum:
                raise ConfigError(f"{dataset}, split {split}: the {part} fold has {int((yy == c).sum())} examples of "
                                  f"class {c}, fewer than {minimum} (evaluate.min_class_examples); ROC-AUC there "
                                  "would be noise")


def fold_sizes(fold: np.ndarray, y: np.ndarray, task: str) -> dict[str, int]:
    """Rows per fold (and positives per fold for binary tasks), as the report shows them."""
    n = {k: int((fold == k).sum()) for k in ("train", "valid", "test")}
    if task == "binary" and y.ndim == 1:
        n.update({f"{k}_pos": int((y[fold == k] == 1).sum()) for k in ("train", "valid", "test")})
    return n


def _table(processed: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(processed / "table.parquet", columns=columns).to_pandas()


def run_features(model_path: str, processed: Path, out: str, rows: np.ndarray, batch_size: int,
                 device: str | None = None) -> str:
    """Pooled frozen-encoder features of the table rows ``rows`` -> ``out`` (.npz with ids, X); returns the device."""
    from ..train.devices import pick_device
    from ..train.loop import load_pretrained
    from .features import extract_features

    data = load_encoded(processed)
    encoder, meta = load_pretrained(model_path, encoder_only=True)
    dev = pick_device(device)
    X = extract_features(encoder, data.subset(rows), int(meta["max_len"]), batch_size, dev)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_suffix(".tmp.npz")
    np.savez(tmp, ids=data.ids[rows].astype(str), X=X)
    tmp.replace(out)
    return str(dev)


def _read_fold(split_file: Path, ids: np.ndarray) -> np.ndarray:
    s = pq.read_table(split_file).to_pandas().set_index("id")
    return s.loc[ids, "fold"].astype(str).to_numpy(dtype=object)


def plan_folds(processed: Path, splits: list[str], dataset: str, task: str, metric: str,
               max_train_rows: int | None, min_class_examples: int = 10) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The table's ids and labels, and per split the fold of every row after the training part is
    subsampled; checks each split's class counts first (before any work)."""
    from .multitask import read_labels

    ids = _table(processed, ["id"])["id"].astype(str).to_numpy()
    y = read_labels(processed, ids)  # [n]; [n, T] with NaN for a multi-task set
    keys = _row_keys(ids)
    folds = {}
    for split in splits:
        fold = subsample_train(_read_fold(processed / "splits" / f"{split}.parquet", ids), y, keys, max_train_rows,
                               stratify=task != "regression")
        check_class_counts(dataset, split, fold, y, metric, min_class_examples)
        folds[split] = fold
    return ids, y, folds


def seed_of(path: str | Path) -> int:
    """The pretraining seed a checkpoint or features path names: ``.../seed<k>/model.pt`` or ``.../seed<k>.npz``."""
    import re

    p = Path(path)
    for name in (p.parent.name, p.stem):
        m = re.fullmatch(r"seed(\d+)", name)
        if m:
            return int(m.group(1))
    raise ConfigError(f"{path}: the path names no pretraining seed (.../seed<k>/model.pt or .../seed<k>.npz)")


def _by_seed(paths: list[str] | str | None, what: str) -> dict[int, str]:
    if paths is None:
        return {}
    out: dict[int, str] = {}
    for p in [paths] if isinstance(paths, str) else paths:
        k = seed_of(p)
        if k in out:
            raise ConfigError(f"{what}: two paths for seed {k}: {out[k]} and {p}")
        out[k] = p
    return out


def run_evaluate(job: EvalJob, processed: str, outs: list[str],
                 features: list[str] | str | None = None, model: list[str] | str | None = None, device: str | None = None,
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Write every result of ``outs``: paths ``.../<split>/seed<k>.json`` that name the split (read
    from ``<processed>/splits/<split>.parquet``) and the seed of each run.

    ``model`` and ``features`` hold one path per pretraining seed (``.../seed<k>/model.pt``,
    ``.../seed<k>.npz``); each run uses the checkpoint of its seed. ``linear`` first computes the
    frozen features of each checkpoint (once for all of its runs); ``classical`` reads the table and
    computes its features once; ``finetune`` loads the task once and each checkpoint once, and trains
    a copy of the encoder per run. Labels and folds are read once per job.
    """
    dataset, method, protocol, task, metric = job.dataset, job.method, job.protocol, job.task, job.metric
    processed_p = Path(processed)
    runs = []
    for out in outs:
        try:
            key = parse_result_path(Path(dataset) / method / protocol / Path(out).parent.name / Path(out).name)
        except ValueError as e:
            raise ConfigError(f"--out {out}: {e}") from None
        runs.append((out, key.split, key.seed))
    ids, y, folds = plan_folds(processed_p, list(dict.fromkeys(s for _, s, _ in runs)), dataset, task, metric,
                               job.max_train_rows, job.min_class_examples)
    used = np.zeros(len(ids), dtype=bool)                        # rows some run reads
    for fold in folds.values():
        used |= np.isin(fold, ("train", "valid", "test"))
    rows = np.flatnonzero(used)
    models, feats = _by_seed(model, "--model"), _by_seed(features, "--features")
    seeds = sorted({seed for _, _, seed in runs})
    if protocol in ("linear", "finetune"):
        missing = [k for k in seeds if k not in models or (protocol == "linear" and k not in feats)]
        if missing:
            raise ConfigError(f"the {protocol} protocol needs --model (and, linear, --features) for seed(s) {missing}")
    if threads and protocol != "classical":
        import torch

        torch.set_num_threads(threads)
    device_used = "cpu"
    t_shared = time.time()
    per_seed: dict[int, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    if protocol == "linear":
        for k in seeds:
            device_used = run_features(models[k], processed_p, feats[k], rows, job.feature_batch_size, device)
            f = np.load(feats[k], allow_pickle=False)
            per_seed[k] = {"X": f["X"], "provenance": {"features_sha256": file_sha256(feats[k]),
                                                       "checkpoint_sha256": file_sha256(models[k])}}
            print(f"{dataset}/{method}/seed{k}: features {f['X'].shape} in {time.time() - t_shared:.1f}s", flush=True)
    elif protocol == "finetune":
        from ..train.devices import pick_device
        from ..train.loop import load_pretrained

        data = load_encoded(processed_p)
        if not np.array_equal(data.ids.astype(str), ids):
            raise ConfigError(f"{processed_p}: the encoded inputs and the table list different ids")
        dev = pick_device(device)
        device_used = str(dev)
        shared = {"data": data.subset(rows), "device": dev}
        for k in seeds:
            encoder, meta = load_pretrained(models[k], encoder_only=True)  # each run trains a copy
            per_seed[k] = {"encoder": encoder, "dim": int(meta["model_cfg"]["dim"]), "max_len": int(meta["max_len"]),
                           "provenance": {"checkpoint_sha256": file_sha256(models[k])}}
    else:
        from .baselines import BASELINES

        if method not in BASELINES:
            raise ConfigError(f"no classical baseline named {method!r} (known: {', '.join(BASELINES)})")
        _, featurize, _ = BASELINES[method]
        shared = {"X": featurize(_table(processed_p).iloc[rows].reset_index(drop=True))}
        per_seed = {k: {"provenance": {}} for k in seeds}
    shared_s = time.time() - t_shared
    y_rows = y[rows]
    results = []
    for out, split, seed in runs:
        t0 = time.time()
        fold = folds[split][rows]
        own = per_seed[seed]
        extra: dict[str, Any] = {}
        if protocol == "linear":
            from .linear import linear_probe

            res = linear_probe(own["X"], y_rows, fold, task, metric, seed)
            extra = {"probe": res.probe}
        elif protocol == "finetune":
            from ..train.devices import seed_everything
            from .finetune import finetune

            seed_everything(seed, threads)
            res = finetune(own["encoder"], own["dim"], shared["data"], y_rows, fold, task, metric, job.finetune,
                           own["max_len"], seed, shared["device"], log=lambda m: print(m, flush=True))
            extra = {"chosen": res.chosen, "curve": res.curve, "grid": res.grid}
            res.model = None  # the next run trains its own copy
        else:
            from .baselines import BASELINES

            res = BASELINES[method][2](shared["X"], y_rows, fold, task, metric, seed, threads or 1)
            if getattr(res, "probe", None):   # a linear baseline (amino-acid composition) records its solver too
                extra = {"probe": res.probe}
        result = {
            "dataset": dataset, "method": method, "protocol": protocol, "split": split, "seed": seed,
            "metric": metric, "test": res.test, "valid": res.valid, "hyper": res.hyper,
            "n": {**res.n, **fold_sizes(fold, y_rows, task)}, **extra, **_task_values(res, processed_p),
            "settings_hash": job.settings_hash,
            "git": git_commit(), "wall_time_s": round(time.time() - t0 + shared_s / len(runs), 3),
            "device": device_used, "host": platform.node(), "python": platform.python_version(), **own["provenance"],
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
