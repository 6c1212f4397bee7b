"""The linear probe: choices on the validation fold only, the chosen model scored on test."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline_src.evaluate.linear import CS, linear_probe
from pipeline_src.evaluate.metrics import compute_metric


def _data(n=600, d=16, k=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    X = centers[y] + 1.5 * rng.normal(size=(n, d))
    fold = np.array(["train"] * (n * 7 // 10) + ["valid"] * (n * 15 // 100) + ["test"] * (n - n * 7 // 10 - n * 15 // 100))
    return X, y, fold


def test_test_labels_never_change_the_choice():
    X, y, fold = _data()
    a = linear_probe(X, y, fold, "classification", "accuracy")
    y2 = y.copy()
    te = fold == "test"
    y2[te] = np.random.default_rng(1).permutation(y2[te])
    b = linear_probe(X, y2, fold, "classification", "accuracy")
    assert a.hyper == b.hyper and a.valid == b.valid
    assert a.test != b.test


@pytest.mark.parametrize("metric,k", [("accuracy", 5), ("roc_auc", 2)])
def test_chosen_model_equals_a_cold_fit_of_the_chosen_c(metric, k):
    """The warm-started C path picks what separate fits pick, and scores the chosen C's model
    (not the last one fitted) on test."""
    X, y, fold = _data(k=k)
    res = linear_probe(X, y, fold, "classification", metric)
    tr, va, te = (fold == f for f in ("train", "valid", "test"))
    mu, sd = X[tr].mean(0), X[tr].std(0)
    Z = (X - mu) / sd

    def score(m, rows):
        p = m.predict_proba(Z[rows])[:, 1] if metric == "roc_auc" else m.predict(Z[rows])
        return compute_metric(metric, y[rows], p)

    cold = {c: LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(Z[tr], y[tr]) for c in CS}
    valid = {c: score(m, va) for c, m in cold.items()}
    best = max(CS, key=lambda c: (valid[c], -CS.index(c)))  # first best, as the probe keeps the first
    assert res.hyper == {"C": best}
    assert res.valid == pytest.approx(valid[best], abs=0.02)
    assert res.test == pytest.approx(score(cold[best], te), abs=0.02)
    assert res.n == {"train": int(tr.sum()), "valid": int(va.sum()), "test": int(te.sum())}


def test_a_split_without_a_fold_is_refused():
    X, y, fold = _data()
    with pytest.raises(ValueError, match="train, valid and test"):
        linear_probe(X, y, np.where(fold == "valid", "train", fold), "classification", "accuracy")


def test_probe_records_iterations_and_convergence(monkeypatch):
    """Every probe records its solver's iterations and whether it converged: converged with the
    settings in use, not converged (and said so, not silenced) when the iterations run out."""
    from pipeline_src.evaluate import linear

    X, y, fold = _data(k=5)
    res = linear_probe(X, y, fold, "classification", "accuracy")
    p = res.probe
    assert p["solver"] == linear.SOLVER and p["max_iter"] == linear.MAX_ITER and p["tol"] == linear.TOL
    assert p["converged"] and p["chosen_converged"] and len(p["grid"]) == len(CS)
    assert all(0 < g["n_iter"] < linear.MAX_ITER and g["converged"] and g["seconds"] >= 0 for g in p["grid"])
    chosen = next(g for g in p["grid"] if g["C"] == res.hyper["C"])
    assert p["n_iter"] == chosen["n_iter"]
    monkeypatch.setattr(linear, "MAX_ITER", 2)
    short = linear_probe(X, y, fold, "classification", "accuracy").probe
    assert not short["converged"] and short["max_iter"] == 2
    assert any(g["n_iter"] == 2 and not g["converged"] for g in short["grid"])
    ridge = linear_probe(X, y.astype(float), fold, "regression", "rmse").probe
    assert ridge["converged"] and ridge["n_iter"] is None and ridge["max_iter"] is None


def test_multitask_probe_converges_only_if_every_task_did(monkeypatch):
    from pipeline_src.evaluate import linear

    X, y, fold = _data(k=2)
    Y = np.stack([y, 1 - y], 1).astype(float)
    Y[::7, 1] = np.nan
    res = linear_probe(X, Y, fold, "binary", "roc_auc")
    assert res.probe["converged"] and all(t["probe"]["converged"] for t in res.tasks)
    monkeypatch.setattr(linear, "MAX_ITER", 1)
    res = linear_probe(X, Y, fold, "binary", "roc_auc")
    assert not res.probe["converged"] and res.probe["n_iter"] == 1
