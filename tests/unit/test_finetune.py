"""The finetune protocol: best-on-valid weights, un-scaled regression outputs, the losses and
metrics of each task kind, an lr grid chosen on valid only, and a killed CLI job that reruns to the
same results; plus the finetune-curves figure."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_src.data.encode import Encoded, load_encoded
from pipeline_src.evaluate.finetune import finetune, lr_factor, make_targets, task_loss
from pipeline_src.evaluate.metrics import compute_metric
from pipeline_src.methods import build_method
from pipeline_src.spec import FinetuneSpec
from test_report_support import write_model

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
MODEL = {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2, "max_len": 8,
         "decoder_dim": 16, "decoder_heads": 2}
BASE = {"epochs": 10, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0, "patience": 3}


def _folds(n_train: int, n_valid: int, n_test: int) -> np.ndarray:
    return np.array(["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test, dtype=object)


def _data(values: np.ndarray) -> Encoded:
    """Continuous samples: [n, F] values, one token per feature."""
    return Encoded("continuous", np.array([f"r{i}" for i in range(len(values))], dtype=object),
                   values=values.astype(np.float32))


def _encoder(data: Encoded, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_method("none", data.spec(MODEL["max_len"]), MODEL, {}).encoder


def _run(data, y, fold, task, metric, seed: int = 0, **cfg):
    return finetune(_encoder(data), MODEL["dim"], data, y, fold, task, metric, FinetuneSpec.from_mapping({**BASE, **cfg}, "test"),
                    MODEL["max_len"], seed, "cpu", log=lambda m: None)


def _rows(fold: np.ndarray, name: str) -> np.ndarray:
    return np.flatnonzero(fold == name)


def _raw(model, data: Encoded, idx: np.ndarray) -> torch.Tensor:
    """The model's outputs on rows ``idx`` in one batch: [len(idx), out]."""
    model.eval()
    with torch.no_grad():
        return model(data.batch(idx, MODEL["max_len"]))


def test_a_valid_peak_returns_that_epochs_weights():
    """Valid targets are half the train targets: the predictions grow from ~0 towards the train
    rule, so valid RMSE is lowest midway and early stopping ends the run; the returned model is
    the one of the best epoch (re-scored, and bit-equal to a run stopped at that epoch)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4))
    fold = _folds(96, 32, 32)
    y = 2 * x[:, 0]
    va, te = _rows(fold, "valid"), _rows(fold, "test")
    y[va] = 0.5 * y[va]
    data = _data(x)
    res = _run(data, y, fold, "regression", "rmse", lr=3e-4, epochs=20)
    valid = [c["valid"] for c in res.curve]
    best = res.chosen["epoch"]
    assert len(res.curve) < 20                                  # early stopping ended the run
    assert best == int(np.argmin(valid)) + 1 and 1 < best < len(res.curve)
    assert valid[0] > valid[best - 1] < valid[-1]               # a peak inside the run
    assert res.valid == valid[best - 1] and res.hyper["best_epoch"] == best
    mu, sd = y[:96].mean(), y[:96].std()
    for rows, score in ((va, res.valid), (te, res.test)):
        pred = _raw(res.model, data, rows)[:, 0].double().numpy() * sd + mu
        assert compute_metric("rmse", y[rows], pred) == pytest.approx(score, abs=1e-6)
    # a constant lr: the first `best` epochs of the trajectory do not depend on the planned length
    cut = _run(data, y, fold, "regression", "rmse", lr=3e-4, epochs=best, patience=100)
    a, b = res.model.state_dict(), cut.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (cut.valid, cut.test) == (res.valid, res.test)


def test_regression_outputs_are_in_label_units():
    """Identical inputs: the model can only learn a constant, the train mean (0 in scaled units).
    It must then score the RMSE of the train mean on test, in label units."""
    rng = np.random.default_rng(1)
    fold = _folds(64, 16, 24)
    y = np.empty(len(fold))
    y[:64] = 100 + 5 * rng.normal(size=64)
    mu = y[:64].mean()
    d = 3 * rng.random(8)
    y[64:80] = np.concatenate([mu + d, mu - d])                 # valid: centred on the train mean
    y[80:] = 90 + 5 * rng.normal(size=24)                       # test: another mean
    data = _data(np.zeros((len(fold), 4)))
    res = _run(data, y, fold, "regression", "rmse", epochs=30, lr=1e-2, patience=30, warmup_frac=0.1,
               schedule="cosine")
    te = _rows(fold, "test")
    raw = _raw(res.model, data, te)[:, 0]
    sd = y[:64].std()
    off = float(raw.abs().max()) * sd                           # |prediction - train mean|, label units
    assert off < 0.05
    expected = float(np.sqrt(np.mean((y[te] - mu) ** 2)))      # ~10.9; ~90 without un-scaling
    assert abs(res.test - expected) <= off + 1e-9              # RMSE moves at most as far as the prediction
    assert res.test == pytest.approx(compute_metric("rmse", y[te], raw.double().numpy() * sd + mu), abs=1e-9)


def test_losses_and_decoders_of_each_task_kind():
    out = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 0.3, 0.1], [0.0, 0.0, 3.0]])
    yb = torch.tensor([1.0, 0.0, 1.0])
    p = torch.sigmoid(out[:, 0])
    assert task_loss(out[:, :1], yb, "binary").item() == pytest.approx(
        float(-(yb * p.log() + (1 - yb) * (1 - p).log()).mean()), rel=1e-6)
    yc = torch.tensor([0, 2, 2])
    assert task_loss(out, yc, "multiclass").item() == pytest.approx(
        float(-out.log_softmax(-1)[torch.arange(3), yc].mean()), rel=1e-6)
    yr = torch.tensor([1.0, 0.0, -1.0])
    assert task_loss(out[:, :1], yr, "regression").item() == pytest.approx(float(((out[:, 0] - yr) ** 2).mean()))
    fold = np.array(["train", "train", "valid", "test"], dtype=object)
    t = make_targets(np.array([0, 1, 1, 0]), fold, "binary", "roc_auc")
    assert t.out_dim == 1 and torch.allclose(t.decode(out[:, :1]), p)
    t = make_targets(np.array([0, 1, 1, 0]), fold, "binary", "accuracy")
    assert t.decode(out[:, :1]).tolist() == [1, 0, 0]
    t = make_targets(np.array([0, 1, 2, 9]), fold, "multiclass", "accuracy")
    assert t.out_dim == 3                                       # classes from train and valid, never test
    assert t.decode(out).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 0, 10)
    f = lr_factor("linear", 2, 10)
    assert [f(s) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    g = lr_factor("cosine", 2, 10)
    assert g(2) == 1.0 and g(6) == pytest.approx(0.5) and g(10) == pytest.approx(0.0)


@pytest.mark.parametrize("task,metric", [("binary", "accuracy"), ("multiclass", "accuracy")])
def test_classification_learns_and_scores_its_decoded_predictions(task: str, metric: str):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 3))
    y = (x[:, 0] > 0).astype(int) if task == "binary" else x.argmax(1)
    fold = _folds(160, 40, 40)
    data = _data(x)
    res = _run(data, y, fold, task, metric, epochs=12, lr=3e-3, patience=12)
    assert res.curve[-1]["train_loss"] < res.curve[0]["train_loss"]
    chance = 0.5 if task == "binary" else 1 / 3
    assert res.valid > chance + 0.15
    te = _rows(fold, "test")
    out = _raw(res.model, data, te)
    pred = (out[:, 0] > 0).long() if task == "binary" else out.argmax(-1)
    assert out.shape[1] == (1 if task == "binary" else 3)
    assert res.test == pytest.approx(compute_metric(metric, y[te], pred.numpy()), abs=1e-12)


def _grid_problem():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    y = x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=120)
    return _data(x), y, _folds(80, 20, 20)


def test_test_labels_never_change_a_choice():
    """lr grid and epoch are chosen on valid: other test labels change the test score only."""
    data, y, fold = _grid_problem()
    te = _rows(fold, "test")
    other = y.copy()
    other[te] = 1000 * np.random.default_rng(4).permutation(y[te])
    kw = dict(epochs=6, patience=2, lrs=[3e-3, 3e-4], warmup_frac=0.2, schedule="linear")
    a = _run(data, y, fold, "regression", "rmse", **kw)
    b = _run(data, other, fold, "regression", "rmse", **kw)
    assert (a.chosen, a.curve, a.grid, a.valid) == (b.chosen, b.curve, b.grid, b.valid)
    assert a.test != b.test
    best = min(a.grid, key=lambda g: g["valid"])
    assert a.chosen == {"lr": best["lr"], "epoch": best["epoch"]} and a.hyper["lr"] == best["lr"]
    # each lr of the grid is trained from the same weights and seed as a run of that lr alone
    alone = _run(data, y, fold, "regression", "rmse", **{**kw, "lrs": [3e-4]})
    assert alone.grid[0] == a.grid[1]


def test_a_split_without_test_rows_is_refused():
    data, y, fold = _grid_problem()
    fold = np.where(fold == "test", "valid", fold)
    with pytest.raises(ValueError, match="train, valid and test"):
        _run(data, y, fold, "regression", "rmse")


# --- the CLI: a killed job reruns to the same results -------------------------------------------

@pytest.fixture(scope="module")
def esol_job(tmp_path_factory) -> dict:
    from pipeline_src.data import splits
    from pipeline_src.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("finetune_cli")
    registry = yaml.safe_load((FIXTURES / "datasets.yaml").read_text())["datasets"]
    raw, processed = root / "raw" / "esol", root / "processed" / "esol"
    raw.mkdir(parents=True)
    for f in registry["esol"]["files"]:
        shutil.copy(FIXTURES / "mirror" / f["mirror_path"], raw / f["name"])
    prepare_dataset("esol", registry["esol"], raw, processed)
    splits.write_split(processed, "scaffold", 0, processed / "splits" / "scaffold.parquet")
    cfg = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    cfg["domains"] = {"chemistry": {**cfg["domains"]["chemistry"], "tasks": ["esol"], "model": MODEL}}
    cfg["evaluate"] = {"protocols": ["finetune"], "baselines": False,
                       "finetune": {"epochs": 6, "batch_size": 16, "lr": 1e-3, "lrs": [1e-3, 3e-4], "patience": 6,
                                    "warmup_frac": 0.1, "schedule": "cosine"}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    spec = load_encoded(processed).spec(MODEL["max_len"])
    models = [write_model(root / "ckpt" / f"seed{k}" / "model.pt", "random", spec, MODEL, {"mask_ratio": 0.3}, seed=k)
              for k in (0, 1)]  # one checkpoint per pretraining seed: each run uses its seed's
    return {"root": root, "config": config, "processed": processed, "model": models}


def _cli(job: dict, outs: list[Path]) -> list[str]:
    return ["evaluate", "--config", str(job["config"]), "--dataset", "esol", "--method", "random",
            "--protocol", "finetune", "--processed", str(job["processed"]), "--model", *map(str, job["model"]),
            "--device", "cpu", "--threads", "1", "--out", *map(str, outs)]


def _outs(d: Path) -> list[Path]:
    return [d / "scaffold" / "seed0.json", d / "scaffold" / "seed1.json"]


RUN_KEYS = ("test", "valid", "hyper", "n", "chosen", "curve", "grid", "settings_hash", "checkpoint_sha256")


def test_a_killed_finetune_job_reruns_to_the_same_results(esol_job: dict):
    from pipeline_src.cli import main

    full = _outs(esol_job["root"] / "full")
    assert main(_cli(esol_job, full)) == 0
    ref = [json.loads(p.read_text()) for p in full]
    assert ref[0]["curve"][0]["epoch"] == 1 and {g["lr"] for g in ref[0]["grid"]} == {1e-3, 3e-4}
    assert ref[0]["chosen"]["lr"] == ref[0]["hyper"]["lr"] and ref[0]["test"] != ref[1]["test"]

    cut = _outs(esol_job["root"] / "cut")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "MASKBENCH_GPU_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline_src", *_cli(esol_job, cut)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        # wait until the first result is written and the second run is training, then kill
        for line in proc.stdout:
            lines.append(line)
            if len([x for x in lines if str(cut[0]) in x]) and "epoch 1:" in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    assert cut[0].exists() and not cut[1].exists()
    assert sorted(p.name for p in cut[0].parent.iterdir()) == ["seed0.json"]  # no partial file
    first = json.loads(cut[0].read_text())
    assert {k: first[k] for k in RUN_KEYS} == {k: ref[0][k] for k in RUN_KEYS}

    assert main(_cli(esol_job, cut)) == 0                     # the rerun (what Snakemake does)
    for p, r in zip(cut, ref):
        got = json.loads(p.read_text())
        assert {k: got[k] for k in RUN_KEYS} == {k: r[k] for k in RUN_KEYS}


# --- the figure -------------------------------------------------------------------------------

def test_finetune_curves_writes_a_png(tmp_path: Path):
    from pipeline_src.report.figures import finetune_curves

    def result(method: str, seed: int, valid: list[float], dataset: str = "esol") -> dict:
        return {"dataset": dataset, "method": method, "protocol": "finetune", "split": "scaffold", "seed": seed,
                "metric": "rmse", "curve": [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "valid": v}
                                            for e, v in enumerate(valid)]}

    results = [result("random", 0, [1.2, 1.0, 0.9]), result("random", 1, [1.1, 0.95]),
               result("sma", 0, [1.0, 0.8, 0.85, 0.9]), result("sma", 1, [1.3, 0.9]),
               result("sma", 0, [5.0, 5.0], dataset="bbbp"), {"dataset": "esol", "method": "none",
                                                             "protocol": "linear", "metric": "rmse"}]
    out = finetune_curves("esol", results, tmp_path / "fig" / "finetune_esol.png")
    assert out == tmp_path / "fig" / "finetune_esol.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert list(out.parent.iterdir()) == [out]                  # no temp file left
    assert finetune_curves("hiv", results, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_finetune_curve_means_average_the_runs_per_epoch():
    from pipeline_src.report.figures import finetune_curve_means

    results = [{"dataset": "esol", "method": "sma", "protocol": "finetune",
                "curve": [{"epoch": 1, "valid": 1.0}, {"epoch": 2, "valid": 0.5}]},
               {"dataset": "esol", "method": "sma", "protocol": "finetune", "curve": [{"epoch": 1, "valid": 2.0}]},
               {"dataset": "esol", "method": "sma", "protocol": "linear", "curve": [{"epoch": 1, "valid": 9.0}]}]
    m = finetune_curve_means("esol", results).set_index(["method", "epoch"])
    assert m.loc[("sma", 1), ["mean", "min", "max", "n"]].tolist() == [1.5, 1.0, 2.0, 2]
    assert m.loc[("sma", 2), ["mean", "n"]].tolist() == [0.5, 1]


def test_predict_batches_by_length_and_keeps_the_row_order():
    """Variable-length inputs: ``predict`` groups rows of similar length into a batch (less padding)
    and returns the predictions in the order of the rows asked for, equal to one row at a time."""
    from pipeline_src.evaluate.finetune import Head, predict

    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 9, size=23)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(34, 90, size=int(offsets[-1])).astype(np.uint8)
    data = Encoded("discrete", np.array([f"m{i}" for i in range(23)], dtype=object), tokens=tokens, offsets=offsets)
    y = rng.normal(size=23)
    fold = _folds(15, 4, 4)
    t = make_targets(y, fold, "regression", "rmse")
    torch.manual_seed(0)
    model = Head(_encoder(data), MODEL["dim"], t.out_dim)
    idx = rng.permutation(23)[:17]
    batched = predict(model, data, idx, MODEL["max_len"], t, 5, "cpu")
    alone = np.array([predict(model, data, np.array([i]), MODEL["max_len"], t, 1, "cpu")[0] for i in idx])
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
