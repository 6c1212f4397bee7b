"""Multi-task sets: missing labels masked out of losses and metrics, the metric averaged over the
tasks, per-task values kept (linear probe, finetune, classical baselines, result JSON)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import byod_files as bf
from pipeline_src.data import prepare as prep
from pipeline_src.batch import InputSpec
from pipeline_src.spec import FinetuneSpec
from pipeline_src.data.encode import load_encoded
from pipeline_src.evaluate import finetune as ft
from pipeline_src.evaluate.baselines import morgan_table, rf_morgan
from pipeline_src.evaluate.linear import linear_probe
from pipeline_src.evaluate.metrics import mean_metric, task_metrics
from pipeline_src.evaluate.multitask import label_columns, read_labels, task_values
from pipeline_src.models import build_encoder


def _data(n=300, d=8, t=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, t))
    y = (X @ W + 0.5 * rng.normal(size=(n, t)) > 0).astype(np.float64)   # [n, T]
    y[rng.random((n, t)) < 0.3] = np.nan                                  # 30 % missing
    fold = np.array([bf.fold_of(i) for i in range(n)])
    return X, y, fold


def test_linear_probe_is_one_probe_per_task_on_its_labelled_rows():
    X, y, fold = _data()
    res = linear_probe(X, y, fold, "binary", "roc_auc")
    per = []
    for t in range(y.shape[1]):
        lab = ~np.isnan(y[:, t])
        r = linear_probe(X[lab], y[lab, t].astype(np.int64), fold[lab], "binary", "roc_auc")
        assert res.tasks[t]["test"] == pytest.approx(r.test) and res.tasks[t]["hyper"] == r.hyper
        per.append(r.test)
    assert res.test == pytest.approx(np.mean(per)) and res.test > 0.8
    assert res.n == {f: int(((fold == f) & ~np.all(np.isnan(y), 1)).sum()) for f in ("train", "valid", "test")}


def test_a_task_that_cannot_be_scored_is_left_out_and_named():
    X, y, fold = _data()
    y[(fold == "test"), 1] = np.where(np.isnan(y[fold == "test", 1]), np.nan, 1.0)   # one class in test
    res = linear_probe(X, y, fold, "binary", "roc_auc")
    assert res.tasks[1] == {"skipped": "one class only among the labelled test rows (ROC-AUC undefined)"}
    assert res.test == pytest.approx(np.mean([res.tasks[0]["test"], res.tasks[2]["test"]]))
    y[:, [0, 2]] = np.nan
    with pytest.raises(ValueError, match="no task of the multi-task set can be scored"):
        linear_probe(X, y, fold, "binary", "roc_auc")


def test_metrics_mask_missing_labels():
    y = np.array([[1, np.nan], [0, 2.0], [1, 3.0], [np.nan, 5.0]])
    p = np.array([[0.9, 100.0], [0.2, 2.0], [0.8, 3.0], [0.0, 4.0]])
    vals = task_metrics("rmse", y, p)
    assert vals[0] == pytest.approx(np.sqrt((0.01 + 0.04 + 0.04) / 3)) and vals[1] == pytest.approx(np.sqrt(1 / 3))
    assert mean_metric("rmse", y, p) == pytest.approx(np.mean(vals))
    assert task_metrics("roc_auc", np.array([[1.0], [1.0]]), np.array([[0.3], [0.2]])) == [None]


def test_finetune_loss_ignores_missing_labels_and_reports_each_task():
    out = torch.tensor([[0.3, -1.0], [2.0, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    loss = ft.task_loss(out, y, "binary")
    want = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([0.3, 2.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx(want.item())
    loss.backward()
    assert out.grad[0, 1] == 0.0                      # no gradient from the missing label
    # a tiny encoder fine-tuned end to end on two regression tasks with missing labels
    rng = np.random.default_rng(0)
    n, L = 80, 12
    offsets = np.arange(n + 1, dtype=np.int64) * L
    tokens = rng.integers(65, 70, size=n * L).astype(np.uint8)
    from pipeline_src.data.encode import Encoded

    data = Encoded("discrete", np.array([f"s{i}" for i in range(n)], dtype=object), tokens=tokens, offsets=offsets)
    counts = (tokens.reshape(n, L) == 65).sum(1).astype(np.float64)
    y2 = np.stack([counts, 2 * counts + 1], axis=1)
    y2[rng.random((n, 2)) < 0.25] = np.nan
    fold = np.array([bf.fold_of(i) for i in range(n)])
    torch.manual_seed(0)
    enc = build_encoder(InputSpec("discrete", L), {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2,
                                                   "mlp_ratio": 2, "max_len": L})
    res = ft.finetune(enc, 16, data, y2, fold, "regression", "rmse",
                      FinetuneSpec(epochs=3, batch_size=16, lr=1e-3, weight_decay=0.0, patience=5), L, 0, "cpu",
                      log=lambda *_: None)
    assert len(res.tasks) == 2 and all(np.isfinite(d["test"]) for d in res.tasks)
    assert res.test == pytest.approx(np.mean([d["test"] for d in res.tasks]))


def test_classical_baseline_and_result_values_on_a_prepared_multi_task_set(tmp_path):
    mol = bf.with_missing(bf.molecules(), {"heavy": (3, 0), "aromatic_n": (4, 1)})
    raw = tmp_path / "raw/tox"
    path, member = bf.write_source(bf.csv_bytes(mol[["smiles", "p_np", "heavy", "aromatic_n", "fold"]]),
                                   "tox.csv", "zip", raw)
    entry = {"domain": "x", "role": "task", "format": "csv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["p_np", "heavy", "aromatic_n"], "task": "binary", "metric": "roc_auc",
             "split": {"kind": "column", "column": "fold"}, "files": [bf.file_entry(path, raw, member)]}
    out = tmp_path / "processed/tox"
    prep.prepare_dataset("tox", entry, raw, out)
    ids = load_encoded(out).ids
    assert label_columns(out) == ["p_np", "heavy", "aromatic_n"]
    y = read_labels(out, ids)
    assert y.shape == (len(ids), 3) and np.isnan(y[:, 1]).sum() == int(mol["heavy"].isna().sum())
    import pyarrow.parquet as pq

    table = pq.read_table(out / "table.parquet").to_pandas()
    fold = table["fold"].to_numpy()
    res = rf_morgan(morgan_table(table), y, fold, "binary", "roc_auc", seed=0)
    assert [d.get("skipped") for d in res.tasks] == [None, None, None]
    assert res.test == pytest.approx(np.mean([d["test"] for d in res.tasks]))
    assert res.tasks[1]["n"]["test"] == int((~np.isnan(y[:, 1]) & (fold == "test")).sum())
    vals = task_values(res, out)["tasks"]
    assert list(vals) == ["p_np", "heavy", "aromatic_n"] and vals["heavy"]["test"] == res.tasks[1]["test"]
    # one label column: the table keeps 'label' and results carry no per-task block
    single = {**entry, "labels": ["p_np"]}
    prep.prepare_dataset("one", single, raw, tmp_path / "processed/one")
    assert label_columns(tmp_path / "processed/one") == ["label"]
    assert task_values(linear_probe(np.eye(3), np.array([0, 1, 0]), np.array(["train", "valid", "test"]),
                                    "regression", "rmse"), tmp_path / "processed/one") == {}
