"""Classical baselines run on the same splits, so a report shows where learned representations
stand: Morgan fingerprints + random forest (chemistry), gradient boosting on the raw features
(HIGGS), amino-acid composition + a linear model (TAPE). These use domain knowledge by design."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from ..plan import BASELINE_KINDS
from .linear import ProbeResult, linear_probe
from .metrics import compute_metric, is_better

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def morgan_fingerprints(smiles: pd.Series, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


def aa_composition(seqs: pd.Series) -> np.ndarray:
    """[n, 21]: frequency of each of the 20 amino acids, plus log length."""
    lut = np.full(256, -1, dtype=np.int64)
    for i, a in enumerate(AMINO_ACIDS):
        lut[ord(a)] = i
    out = np.zeros((len(seqs), len(AMINO_ACIDS) + 1), dtype=np.float32)
    for r, s in enumerate(seqs):
        ids = lut[np.frombuffer(s.encode("ascii", "replace"), dtype=np.uint8)]
        ids = ids[ids >= 0]
        if len(ids):
            out[r, :-1] = np.bincount(ids, minlength=len(AMINO_ACIDS)) / len(ids)
        out[r, -1] = np.log1p(len(s))
    return out


def _fit_select(make: Callable[[dict], object], grid: list[dict], X, y, fold, task, metric) -> ProbeResult:
    if y.ndim == 2:  # several label columns: one model per task on its labelled rows
        from .multitask import per_task

        return per_task(lambda rows, yt: _fit_select(make, grid, X[rows], yt, fold[rows], task, metric), y, fold, task, metric)
    tr, va, te = (fold == f for f in ("train", "valid", "test"))

    def pred(m, Xs):
        if hasattr(m, "n_jobs"):
            m.n_jobs = 1  # a forest's parallel predict sums trees in thread-finish order: not reproducible
        if task == "regression":
            return m.predict(Xs)
        return m.predict_proba(Xs)[:, 1] if metric == "roc_auc" else m.predict(Xs)

    best = None
    for h in grid:
        m = make(h).fit(X[tr], y[tr])
        v = compute_metric(metric, y[va], pred(m, X[va]))
        if best is None or is_better(metric, v, best[0]):
            best = (v, h, m)
    v, h, m = best
    return ProbeResult(test=compute_metric(metric, y[te], pred(m, X[te])), valid=v, hyper=h,
                       n={k: int((fold == k).sum()) for k in ("train", "valid", "test")})


def morgan_table(table: pd.DataFrame) -> np.ndarray:
    return morgan_fingerprints(table["smiles"])


def rf_morgan(X: np.ndarray, y, fold, task, metric, seed: int, threads: int = 1) -> ProbeResult:
    """X: Morgan fingerprints (:func:`morgan_table`)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task == "regression" else RandomForestClassifier
    # sqrt features per split (sklearn's regressor default is all 2048 bits: ~40x slower, no better)
    grid = [{"n_estimators": 200, "max_features": "sqrt", "min_samples_leaf": leaf} for leaf in (1, 3)]
    return _fit_select(lambda h: cls(random_state=seed, n_jobs=threads, **h), grid, X, y, fold, task, metric)


def numeric_table(table: pd.DataFrame) -> np.ndarray:
    # the features are the float32 columns (labels are int64, or float64 for regression / several columns)
    feats = [c for c in table.columns if table[c].dtype == np.float32]
    return table[feats].to_numpy(np.float32)


def gbm_features(X: np.ndarray, y, fold, task, metric, seed: int, threads: int = 1) -> ProbeResult:
    """X: the raw numeric features (:func:`numeric_table`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    grid = [{"max_iter": it, "learning_rate": 0.1} for it in (100, 300)]
    return _fit_select(lambda h: cls(random_state=seed, **h), grid, X, y, fold, task, metric)


def aac_table(table: pd.DataFrame) -> np.ndarray:
    return aa_composition(table["seq"] if "seq" in table else table["sequence"])


def aac_linear(X: np.ndarray, y, fold, task, metric, seed: int, threads: int = 1) -> ProbeResult:
    """X: amino-acid composition (:func:`aac_table`)."""
    return linear_probe(X, y, fold, task, metric, seed)


# name -> (input kind it applies to, features of a table (once per job), fit-and-score on one split);
# the kinds, which the plan needs without these imports, live in plan.BASELINE_KINDS
_FUNCTIONS: dict[str, tuple[Callable[[pd.DataFrame], np.ndarray], Callable[..., ProbeResult]]] = {
    "rf_morgan": (morgan_table, rf_morgan),
    "gbm": (numeric_table, gbm_features),
    "aac_linear": (aac_table, aac_linear),
}
BASELINES: dict[str, tuple[str, Callable[[pd.DataFrame], np.ndarray], Callable[..., ProbeResult]]] = {
    name: (BASELINE_KINDS[name], *fns) for name, fns in _FUNCTIONS.items()}
if set(_FUNCTIONS) != set(BASELINE_KINDS):
    raise ImportError(f"plan.BASELINE_KINDS {sorted(BASELINE_KINDS)} and the baseline functions {sorted(_FUNCTIONS)} differ")
