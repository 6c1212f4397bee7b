"""Paired significance tests behind the report's findings, all from kept libraries.

Input: a tidy frame with one row per scored evaluation, columns ``dataset, method, protocol, unit,
test, metric``. ``unit`` names a paired evaluation unit ``seed<k>/<split>`` (e.g.
``seed1/scaffold_cv_r0_f3``): the same string means the same fold and the same pretraining seed for
every method, so two methods can be compared unit by unit. ``metric`` is ``roc_auc``,
``accuracy``, ``spearman`` (higher is better) or ``rmse`` (lower is better); one metric per dataset.

**The replication unit is the pretraining seed** (:mod:`.design`): the folds of one seed read one
checkpoint, so they are repeated measures inside it. Every test that gives a verdict runs on the
seed means — each (method, seed)'s mean over its splits — which on balanced data is the exact
mixed-model test with the checkpoint (method x seed) error term (the reasoning and references are
in :mod:`.design`). A task with one split per seed (a fixed split) has seed means equal to its units.

Per task (dataset × protocol), on the units every method of the protocol has (``paired_units``),
averaged to seed means:

- Δ = method − reference, the mean over seeds of the seed-mean differences in the metric's units;
  a paired t 95 % interval (``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank p
  (``scipy.stats.wilcoxon``; NaN, with the reason, when every difference is zero or fewer than 6 are
  non-zero: with 5 the smallest two-sided p it can give is 0.0625).
- repeated-measures ANOVA over all methods (``statsmodels`` ``AnovaRM``, subject = pretraining seed),
  then Tukey HSD simultaneous 95 % intervals for every pair of methods, as Ash et al. (J. Chem. Inf.
  Model. 2025) do: statsmodels' Tukey HSD routine (the one ``pairwise_tukeyhsd`` calls) applied to
  the per-method means, with the repeated-measures error term — the residual mean square of the
  additive model score ~ method + seed (statsmodels OLS), df = (n−1)(k−1) — instead of the
  between-subject variance that ``pairwise_tukeyhsd`` would use on unpaired groups.
  Tukey HSD controls the family-wise error by itself, so it is read whatever the ANOVA's p.
- verdict: ``better`` / ``worse`` when the Tukey interval excludes 0 (direction from the metric),
  else ``no significant difference``; the paired t interval decides when Tukey cannot run (fewer
  than 2 seeds, or no residual variance); ``not tested`` when neither can (n < 2).
- the same Tukey HSD with the fold as the unit (every (seed, split) unit a subject) is kept in
  ``comparisons.csv`` with ``unit`` = "fold (conditional on these checkpoints)": it says what these
  checkpoints did on these folds, never what the method does, and gives no verdict.

Across tasks (one protocol; tasks = its datasets; methods = those scored on every task): Friedman
test (``scipy.stats.friedmanchisquare``) on the per-task mean scores, oriented so that higher is
better (RMSE negated), then the all-pairs post-hoc on mean ranks with Holm's correction (Demšar
2006; García & Herrera 2008; ``scikit_posthocs.posthoc_siegel_friedman``, p_adjust="holm"); the
post-hoc is read only when Friedman rejects. Not run, with the reason, for fewer than 3 tasks or
3 methods. A critical-difference diagram (``scikit_posthocs.critical_difference_diagram``).

Bolding (``significantly_best``): per task, the method with the best mean, plus every method whose
design-aware Tukey interval against it contains 0 — and nothing at all unless the best is
significantly better than at least one other method (so a column of indistinguishable methods has
no bold).

Names: a method is shown by the ``display_name`` its checkpoints' ``meta.json`` record (the method
class's attribute), passed in as ``names`` ({method: display name}); without one, by its config
name. ``none`` (no pretraining, no checkpoint) and the classical baselines have fixed labels.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..paths import HIGHER_IS_BETTER
from . import design
from .design import FOLD_UNIT, SEED_UNIT
from .tables import METRIC_LABEL

ALPHA = 0.05
MIN_WILCOXON_NONZERO = 6
COLUMNS = ["dataset", "method", "protocol", "unit", "test", "metric"]
BETTER, WORSE, NO_DIFF, NOT_TESTED = "better", "worse", "no significant difference", "not tested"
TUKEY_TEST = "Tukey HSD after repeated-measures ANOVA"
PAIRED_T_TEST = "paired t interval"
NO_RESIDUAL = "no residual variance (every unit shows the same differences between methods)"

# the harness's own rows, which have no checkpoint (and so no meta.json) to name them
FIXED_LABELS: dict[str, str] = {
    "none": "no pretraining",
    # classical baselines (pipeline_src/evaluate/baselines.py): domain-specific, no pretraining
    "rf_morgan": "RF on Morgan FP",
    "gbm": "gradient boosting on the raw features",
    "aac_linear": "linear model on amino-acid composition",
}
MAE, NO_PRETRAINING = "random", "none"           # the fixed references of every protocol
FALLBACK_LABELS = {**FIXED_LABELS, MAE: "MAE (random)"}   # when meta.json names no display_name

COMPARISON_COLUMNS = ["dataset", "protocol", "metric", "method", "reference", "unit", "n", "n_seeds",
                      "splits_per_seed", "delta", "ci_low", "ci_high", "n_dropped", "p_wilcoxon", "wilcoxon_note",
                      "tukey_low", "tukey_high", "tukey_reject", "anova_F", "anova_p", "verdict", "verdict_test",
                      "verdict_low", "verdict_high"]


def display_name(method: str, names: Mapping[str, str] | None = None) -> str:
    """``names[method]`` (from meta.json), else the fixed label of ``none``, MAE and the classical
    baselines, else the config name."""
    if names and names.get(method):
        return str(names[method])
    return FALLBACK_LABELS.get(method, method)


# --- input -----------------------------------------------------------------------------------


def check_results(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with the columns checked, rows of non-finite ``test`` left out (a unit a method did
    not score is not paired), text columns as ``str``. Raises ``ValueError`` naming the problem."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})")
    out = df[COLUMNS].copy()
    for c in ("dataset", "method", "protocol", "unit", "metric"):
        out[c] = out[c].astype(str)
    unknown = sorted(set(out["metric"]) - set(HIGHER_IS_BETTER))
    if unknown:
        row = out.index[out["metric"].isin(unknown)][0]
        raise ValueError(f"results row {row}: unknown metric {unknown[0]!r} (known: {', '.join(HIGHER_IS_BETTER)})")
    per_ds = out.groupby("dataset")["metric"].nunique()
    if (per_ds > 1).any():
        ds = per_ds.index[per_ds > 1][0]
        raise ValueError(f"dataset {ds!r} has results in several metrics: "
                         f"{', '.join(sorted(set(out.loc[out['dataset'] == ds, 'metric'])))}")
    out["test"] = pd.to_numeric(out["test"], errors="coerce").astype(float)
    dup = out.duplicated(["dataset", "protocol", "unit", "method"], keep=False)
    if dup.any():
        r = out[dup].iloc[0]
        raise ValueError(f"results row {out.index[dup][0]}: several results for dataset {r.dataset!r}, protocol "
                         f"{r.protocol!r}, unit {r.unit!r}, method {r.method!r} (a unit is scored once per method)")
    return out[np.isfinite(out["test"].to_numpy())]


def _metric(df: pd.DataFrame, dataset: str) -> str:
    m = df.loc[df["dataset"] == dataset, "metric"]
    if m.empty:
        raise ValueError(f"no results for dataset {dataset!r}")
    return str(m.iloc[0])


def paired_units(df: pd.DataFrame, dataset: str, protocol: str, methods: Iterable[str]) -> pd.DataFrame:
    """[units, methods] test scores, rows = the units every one of ``methods`` scored (sorted).

    ``attrs``: ``n_dropped`` (units some but not all of ``methods`` scored, left out),
    ``n_units_per_method`` (dict, before pairing)."""
    methods = list(dict.fromkeys(methods))
    df = check_results(df)
    sub = df[(df["dataset"] == dataset) & (df["protocol"] == protocol) & df["method"].isin(methods)]
    wide = sub.pivot(index="unit", columns="method", values="test").reindex(columns=methods)
    wide.columns = pd.Index([str(c) for c in wide.columns], dtype=object, name="method")
    wide.index = pd.Index([str(u) for u in wide.index], dtype=object, name="unit")
    paired = wide.dropna().sort_index()
    paired.attrs["n_dropped"] = int(len(wide) - len(paired))
    paired.attrs["n_units_per_method"] = {m: int(wide[m].notna().sum()) for m in methods}
    return paired


# --- one pair, one task ------------------------------------------------------------------------


@dataclass
class Paired:
    """One method against one reference on the same units; delta = mean(method − reference)."""

    delta: float
    ci_low: float
    ci_high: float
    n: int
    p_wilcoxon: float
    wilcoxon_note: str = ""


def paired_difference(x: np.ndarray, y: np.ndarray, confidence: float = 1 - ALPHA) -> Paired:
    """Paired t interval and Wilcoxon signed-rank p for ``x − y`` (x, y: [n], unit-aligned)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D arrays of one length, got {x.shape} and {y.shape}")
    d = x - y
    n = len(d)
    delta = float(d.mean()) if n else math.nan
    lo = hi = math.nan
    if n >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # constant differences: t is ±inf or NaN
            ci = stats.ttest_rel(x, y).confidence_interval(confidence)
        lo, hi = float(ci.low), float(ci.high)
    nonzero = int(np.count_nonzero(d))
    if n == 0:
        p, note = math.nan, "no paired units"
    elif nonzero == 0:
        p, note = math.nan, "all differences are zero"
    elif nonzero < MIN_WILCOXON_NONZERO:
        p, note = math.nan, (f"{nonzero} non-zero difference(s): the signed-rank test cannot reach p < 0.05 "
                             f"with fewer than {MIN_WILCOXON_NONZERO}")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # ties / zeros: scipy switches to the normal approx.
            p, note = float(stats.wilcoxon(x, y).pvalue), ""
    return Paired(delta, lo, hi, n, p, note)


def verdict(metric: str, low: float, high: float) -> str:
    """From an interval for method − reference and the metric's direction."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return NOT_TESTED
    higher = HIGHER_IS_BETTER[metric]
    if low > 0:
        return BETTER if higher else WORSE
    if high < 0:
        return WORSE if higher else BETTER
    return NO_DIFF


Tukey = dict[tuple[str, str], tuple[float, float, float, bool]]    # (method, ref) -> (Δ, low, high, reject)


@dataclass
class TaskTests:
    """Every test of one (dataset, protocol) family: the design-aware ones on the seed means of its
    paired units, and the fold-unit Tukey HSD (conditional on these checkpoints) on the units."""

    dataset: str
    protocol: str
    metric: str
    scores: pd.DataFrame                     # [n units, k methods], paired
    n_dropped: int
    anova: dict[str, float] | None           # F, df_num, df_den, p — subject = pretraining seed
    anova_note: str
    tukey: Tukey | None                      # design-aware: on the seed means
    tukey_note: str
    seed_scores: pd.DataFrame | None = None  # [n seeds, k methods]: each checkpoint's mean over its splits
    fold_tukey: Tukey | None = None          # subject = (seed, split) unit; None with one split per seed
    fold_tukey_note: str = ""

    def __post_init__(self) -> None:
        if self.seed_scores is None:
            self.seed_scores = design.seed_means(self.scores)

    @property
    def methods(self) -> list[str]:
        return list(self.scores.columns)

    @property
    def n(self) -> int:
        """Replication units: pretraining seeds."""
        return len(self.seed_scores)

    @property
    def n_units(self) -> int:
        """(seed, split) units."""
        return len(self.scores)

    @property
    def splits_per_seed(self) -> int | None:
        """Splits of every seed (None when the seeds differ, after pairing)."""
        counts = set(self.seed_scores.attrs.get("splits_per_seed", {}).values())
        return counts.pop() if len(counts) == 1 else None

    @property
    def repeated(self) -> bool:
        """Whether any seed has more than one split (folds are repeated measures)."""
        return self.n_units > self.n

    @property
    def means(self) -> pd.Series:
        """Per method, the mean over seeds of its seed means (the unit mean on balanced data)."""
        return self.seed_scores.mean(axis=0)

    def pair(self, method: str, reference: str) -> Paired:
        return paired_difference(self.seed_scores[method].to_numpy(), self.seed_scores[reference].to_numpy())

    def compare(self, method: str, reference: str) -> dict:
        """The design-aware comparison row (``COMPARISON_COLUMNS``, unit = pretraining seed)."""
        p = self.pair(method, reference)
        t = (self.tukey or {}).get((method, reference))
        if t is not None:
            v, test, lo, hi = verdict(self.metric, t[1], t[2]), TUKEY_TEST, t[1], t[2]
        else:
            v = verdict(self.metric, p.ci_low, p.ci_high)
            test, lo, hi = (PAIRED_T_TEST, p.ci_low, p.ci_high) if v != NOT_TESTED else ("", math.nan, math.nan)
        a = self.anova or {}
        k = self.splits_per_seed
        return {"dataset": self.dataset, "protocol": self.protocol, "metric": self.metric, "method": method,
                "reference": reference, "unit": SEED_UNIT, "n": p.n, "n_seeds": self.n,
                "splits_per_seed": k if k is not None else pd.NA, "delta": p.delta, "ci_low": p.ci_low,
                "ci_high": p.ci_high, "n_dropped": self.n_dropped, "p_wilcoxon": p.p_wilcoxon,
                "wilcoxon_note": p.wilcoxon_note, "tukey_low": t[1] if t else math.nan,
                "tukey_high": t[2] if t else math.nan, "tukey_reject": bool(t[3]) if t else pd.NA,
                "anova_F": a.get("F", math.nan), "anova_p": a.get("p", math.nan), "verdict": v,
                "verdict_test": test, "verdict_low": lo, "verdict_high": hi}

    def compare_folds(self, method: str, reference: str) -> dict:
        """The fold-unit row: what these checkpoints did on these folds (paired t and Tukey HSD with
        every (seed, split) unit a subject). No verdict: it is not a claim about the method."""
        p = paired_difference(self.scores[method].to_numpy(), self.scores[reference].to_numpy())
        t = (self.fold_tukey or {}).get((method, reference))
        k = self.splits_per_seed
        return {"dataset": self.dataset, "protocol": self.protocol, "metric": self.metric, "method": method,
                "reference": reference, "unit": FOLD_UNIT, "n": p.n, "n_seeds": self.n,
                "splits_per_seed": k if k is not None else pd.NA, "delta": p.delta, "ci_low": p.ci_low,
                "ci_high": p.ci_high, "n_dropped": self.n_dropped, "p_wilcoxon": p.p_wilcoxon,
                "wilcoxon_note": p.wilcoxon_note, "tukey_low": t[1] if t else math.nan,
                "tukey_high": t[2] if t else math.nan, "tukey_reject": bool(t[3]) if t else pd.NA,
                "anova_F": math.nan, "anova_p": math.nan, "verdict": "", "verdict_test": "",
                "verdict_low": math.nan, "verdict_high": math.nan}


def _long(scores: pd.DataFrame) -> pd.DataFrame:
    long = scores.rename_axis("unit").reset_index().melt(id_vars="unit", var_name="method", value_name="score")
    long["unit"] = long["unit"].astype(object)
    long["method"] = long["method"].astype(object)
    return long


def rm_anova(scores: pd.DataFrame) -> dict[str, float]:
    """Repeated-measures ANOVA (statsmodels AnovaRM; subject = unit, within = method) on [units, methods]."""
    from statsmodels.stats.anova import AnovaRM

    row = AnovaRM(_long(scores), depvar="score", subject="unit", within=["method"]).fit().anova_table.iloc[0]
    return {"F": float(row["F Value"]), "df_num": float(row["Num DF"]), "df_den": float(row["Den DF"]),
            "p": float(row["Pr > F"])}


def rm_tukey(scores: pd.DataFrame, alpha: float = ALPHA) -> dict[tuple[str, str], tuple[float, float, float, bool]]:
    """Tukey HSD simultaneous (1 − alpha) intervals for every ordered pair of methods of [units, methods],
    with the repeated-measures error term (residual mean square of ``score ~ method + unit``)."""
    from statsmodels.regression.linear_model import OLS
    from statsmodels.sandbox.stats.multicomp import tukeyhsd

    n, k = scores.shape
    long = _long(scores)
    # additive two-way model: intercept + (k − 1) method and (n − 1) unit indicators
    X = pd.get_dummies(long[["method", "unit"]], drop_first=True, dtype=float)
    X.insert(0, "const", 1.0)
    fit = OLS(long["score"].to_numpy(float), X.to_numpy()).fit()
    mse, df_err = float(fit.mse_resid), float(fit.df_resid)          # df_err = (n − 1)(k − 1)
    scale = max(1.0, float(np.abs(scores.to_numpy()).max()))
    if not (math.isfinite(mse) and mse > (1e-12 * scale) ** 2):     # rounding noise only
        raise ValueError(NO_RESIDUAL)
    means = scores.mean(axis=0).to_numpy()
    # per-group df summing to df_err; nobs per group = n (balanced: every method on every unit)
    (i1, i2), reject, diffs, _, confint, *_ = tukeyhsd(means, np.full(k, n), mse, df=np.full(k, df_err / k),
                                                       alpha=alpha)
    names = list(scores.columns)
    out = {}
    for a, b, rej, d, (lo, hi) in zip(i1, i2, reject, diffs, confint):
        # statsmodels orders each pair (i < j) as mean_j − mean_i
        out[(names[b], names[a])] = (float(d), float(lo), float(hi), bool(rej))
        out[(names[a], names[b])] = (-float(d), -float(hi), -float(lo), bool(rej))
    return out


def _tukey_and_anova(scores: pd.DataFrame) -> tuple[dict | None, str, Tukey | None, str]:
    """(anova, anova_note, tukey, tukey_note) on [subjects, methods]."""
    n, k = scores.shape
    anova, anova_note, tukey, tukey_note = None, "", None, ""
    if k < 2:
        anova_note = tukey_note = f"{k} method(s): nothing to compare"
    elif n < 2:
        anova_note = tukey_note = f"n = {n} pretraining seed(s): at least 2 are needed"
    else:
        try:
            tukey = rm_tukey(scores)
        except ValueError as e:
            tukey_note = str(e)
        if tukey_note == NO_RESIDUAL:
            anova_note = NO_RESIDUAL
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                anova = rm_anova(scores)
    return anova, anova_note, tukey, tukey_note


def task_tests(df: pd.DataFrame, dataset: str, protocol: str, methods: Iterable[str] | None = None) -> TaskTests:
    """All per-task tests for ``methods`` (default: every method with results for this dataset and
    protocol): the design-aware ones on the seed means, the fold-unit Tukey HSD on the units when a
    seed has several splits."""
    df = check_results(df)
    sub = df[(df["dataset"] == dataset) & (df["protocol"] == protocol)]
    if sub.empty:
        raise ValueError(f"no results for dataset {dataset!r}, protocol {protocol!r}")
    if methods is None:
        methods = list(dict.fromkeys(sub["method"]))
    scores = paired_units(sub, dataset, protocol, methods)
    seeds = design.seed_means(scores)
    anova, anova_note, tukey, tukey_note = _tukey_and_anova(seeds)
    fold_tukey, fold_note = None, "one split per seed: the seed is the unit"
    if len(scores) > len(seeds):
        _, _, fold_tukey, fold_note = _tukey_and_anova(scores)
    return TaskTests(dataset, protocol, _metric(sub, dataset), scores, int(scores.attrs["n_dropped"]),
                     anova, anova_note, tukey, tukey_note, seeds, fold_tukey, fold_note)


def all_task_tests(df: pd.DataFrame) -> dict[tuple[str, str], TaskTests]:
    """(dataset, protocol) -> its tests, for every pair in ``df`` (in order of appearance)."""
    df = check_results(df)
    keys = list(dict.fromkeys(zip(df["dataset"], df["protocol"])))
    return {(ds, p): task_tests(df, ds, p) for ds, p in keys}


def compare_methods(df: pd.DataFrame, references: Iterable[str] | None = (MAE, NO_PRETRAINING),
                    tests: dict[tuple[str, str], TaskTests] | None = None, folds: bool = True) -> pd.DataFrame:
    """Tidy table of comparisons (``COMPARISON_COLUMNS``): in every task, every method against each
    of ``references`` present there (``None``: against every other method, all ordered pairs). Each
    pair has its design-aware row (unit = pretraining seed, with the verdict) and, where a seed has
    several splits and ``folds``, the fold-unit row after it (conditional on these checkpoints, no
    verdict)."""
    tests = all_task_tests(df) if tests is None else tests
    rows = []
    for t in tests.values():
        refs = t.methods if references is None else [r for r in references if r in t.methods]
        for r in refs:
            for m in t.methods:
                if m == r:
                    continue
                rows.append(t.compare(m, r))
                if folds and t.repeated:
                    rows.append(t.compare_folds(m, r))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def significantly_best(df: pd.DataFrame, tests: dict[tuple[str, str], TaskTests] | None = None
                       ) -> dict[tuple[str, str], set[str]]:
    """(dataset, protocol) -> the methods to bold: the best mean (metric direction) plus every method
    whose design-aware Tukey interval (on the pretraining seeds' means) against it contains 0; empty
    when Tukey could not run or the best is not significantly better than any other method."""
    tests = all_task_tests(df) if tests is None else tests
    out: dict[tuple[str, str], set[str]] = {}
    for key, t in tests.items():
        if t.tukey is None or len(t.methods) < 2:
            out[key] = set()
            continue
        means = t.means
        best = str(means.idxmax() if HIGHER_IS_BETTER[t.metric] else means.idxmin())
        others = [m for m in t.methods if m != best]
        if not any(t.tukey[(best, m)][3] for m in others):
            out[key] = set()
            continue
        out[key] = {best} | {m for m in others if not t.tukey[(best, m)][3]}
    return out


# --- across tasks ------------------------------------------------------------------------------


@dataclass
class AcrossTasks:
    """Friedman test over the tasks of one protocol, on per-task mean scores."""

    protocol: str
    tasks: list[str]
    methods: list[str]
    scores: pd.DataFrame                       # [tasks, methods] per-task means, as measured
    mean_ranks: pd.Series                      # 1 = best (metric direction)
    statistic: float = math.nan
    p: float = math.nan
    posthoc: pd.DataFrame | None = None        # Holm-adjusted p, [methods, methods]
    note: str = ""                             # why the test was not run
    left_out: dict[str, list[str]] = field(default_factory=dict)   # method -> tasks it lacks

    @property
    def ran(self) -> bool:
        return math.isfinite(self.statistic)

    def compare(self, method: str, reference: str) -> tuple[str, float]:
        """(verdict, Holm p): ``not tested`` when Friedman did not run or a method is not in it;
        ``no significant difference`` (p = NaN) when Friedman does not reject."""
        if not self.ran or method not in self.methods or reference not in self.methods:
            return NOT_TESTED, math.nan
        if self.p >= ALPHA or self.posthoc is None:
            return NO_DIFF, math.nan
        p = float(self.posthoc.loc[method, reference])
        if p >= ALPHA:
            return NO_DIFF, p
        return (BETTER if self.mean_ranks[method] < self.mean_ranks[reference] else WORSE), p


def across_tasks(df: pd.DataFrame, protocol: str, methods: Iterable[str] | None = None,
                 tests: dict[tuple[str, str], TaskTests] | None = None) -> AcrossTasks:
    """Friedman + Holm post-hoc over the datasets of ``protocol``; methods scored on every task only."""
    from scipy import stats
    import scikit_posthocs as sp

    tests = all_task_tests(df) if tests is None else tests
    fam = {ds: t for (ds, p), t in tests.items() if p == protocol and t.n > 0}
    tasks = list(fam)
    cand = list(dict.fromkeys(methods if methods is not None else [m for t in fam.values() for m in t.methods]))
    left_out = {m: [ds for ds in tasks if m not in fam[ds].methods] for m in cand}
    left_out = {m: v for m, v in left_out.items() if v}
    kept = [m for m in cand if m not in left_out]
    scores = pd.DataFrame({m: [float(fam[ds].means[m]) for ds in tasks] for m in kept}, index=tasks, dtype=float)
    sign = np.array([1.0 if HIGHER_IS_BETTER[fam[ds].metric] else -1.0 for ds in tasks])
    oriented = scores.mul(sign, axis=0)                                  # higher = better in every task
    ranks = oriented.rank(axis=1, ascending=False).mean(axis=0) if len(kept) else pd.Series(dtype=float)
    res = AcrossTasks(protocol, tasks, kept, scores, ranks, left_out=left_out)
    if len(tasks) < 3:
        res.note = f"{len(tasks)} task(s) with results: the Friedman test needs at least 3"
        return res
    if len(kept) < 3:
        res.note = f"{len(kept)} method(s) scored on every task: the Friedman test needs at least 3"
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                 # all ties in every task
        fr = stats.friedmanchisquare(*[oriented[m].to_numpy() for m in kept])
    res.statistic, res.p = float(fr.statistic), float(fr.pvalue)
    if not res.ran:
        res.note = "every task ranks the methods as tied"
        return res
    ph = sp.posthoc_siegel_friedman(oriented, p_adjust="holm")
    res.posthoc = ph.rename(index=str, columns=str).reindex(index=kept, columns=kept).astype(float)
    return res


def unique_labels(methods: Iterable[str], names: Mapping[str, str] | None = None) -> dict[str, str]:
    """method -> its display name, with ``(config name)`` added where two methods share one."""
    ms = list(dict.fromkeys(methods))
    labels = {m: display_name(m, names) for m in ms}
    seen: dict[str, int] = {}
    for v in labels.values():
        seen[v] = seen.get(v, 0) + 1
    return {m: (f"{v} ({m})" if seen[v] > 1 and v != m else v) for m, v in labels.items()}


def critical_difference_png(res: AcrossTasks, path: str | Path, names: Mapping[str, str] | None = None
                            ) -> Path | None:
    """Critical-difference diagram (mean ranks; a bar joins methods the Holm post-hoc does not
    separate — all of them when Friedman does not reject), every method of the Friedman test.
    None when the test did not run."""
    if not res.ran:
        return None
    import scikit_posthocs as sp

    from .figures import plt, save_png

    labels = unique_labels(res.methods, names)
    sig = res.posthoc if (res.posthoc is not None and res.p < ALPHA) else \
        pd.DataFrame(1.0, index=res.methods, columns=res.methods)
    sig = sig.rename(index=labels, columns=labels)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.3 * len(res.methods)))
    sp.critical_difference_diagram(res.mean_ranks.rename(index=labels), sig, ax=ax, alpha=ALPHA,
                                   label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}")
    ax.set_title(f"Mean rank over {len(res.tasks)} tasks, protocol {res.protocol} (1 = best; "
                 f"Friedman {fmt_p(res.p)}, Holm post-hoc)", fontsize=9, pad=20)
    return save_png(fig, path)


# --- findings ----------------------------------------------------------------------------------


def fmt_p(p: float) -> str:
    """``p = 0.041``, ``p < 0.0001`` or ``p = n/a``."""
    if not math.isfinite(p):
        return "p = n/a"
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def _fmt_d(x: float) -> str:
    """``+0.031`` / ``−0.012`` (a true minus); ``+0.000`` for what rounds to zero."""
    if not math.isfinite(x):
        return "n/a"
    return f"{(0.0 if abs(x) < 5e-4 else x):+.3f}".replace("-", "−")


def _fmt_v(x: float, digits: int = 3) -> str:
    return "n/a" if not (isinstance(x, (int, float)) and math.isfinite(x)) else f"{x:.{digits}f}"


def n_text(t: TaskTests) -> str:
    """``n = 3 pretraining seeds, each the mean of its 10 splits`` (the unit every verdict uses)."""
    counts = sorted(set((t.seed_scores.attrs.get("splits_per_seed") or {}).values()))
    base = f"n = {t.n} pretraining seed{'s' if t.n != 1 else ''}"
    if not counts or counts == [1]:
        return base + " (one split each)"
    k = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return base + f", each the mean of its {k} splits"


def task_statement(t: TaskTests, method: str, reference: str, unit: str = "") -> str:
    """``better (Δ = +0.031, 95 % CI [+0.012, +0.050], n = 3 pretraining seeds, each the mean of its
    10 splits; Tukey HSD over 6 methods on the seed means; Wilcoxon ...)``: the interval is the one the
    verdict was read from (Tukey simultaneous, else paired t on the seed means)."""
    row = t.compare(method, reference)
    u = f" {unit}" if unit else ""
    if row["verdict_test"] == TUKEY_TEST:
        how = f"Tukey HSD over {len(t.methods)} methods on the seed means"
    else:
        how = f"{PAIRED_T_TEST} on the seed means"
        if t.tukey_note:
            how += f" (Tukey HSD not run: {t.tukey_note})"
    w = (f"Wilcoxon signed-rank {fmt_p(row['p_wilcoxon'])}" if math.isfinite(row["p_wilcoxon"])
         else f"Wilcoxon signed-rank not run: {row['wilcoxon_note']}")
    if row["verdict"] == NOT_TESTED:
        return (f"{NOT_TESTED} (Δ = {_fmt_d(row['delta'])}{u}, {n_text(t)}: at least 2 pretraining seeds "
                f"are needed)")
    return (f"{row['verdict']} (Δ = {_fmt_d(row['delta'])}{u}, 95 % CI [{_fmt_d(row['verdict_low'])}, "
            f"{_fmt_d(row['verdict_high'])}], {n_text(t)}; {how}; {w})")


def overall_statement(res: AcrossTasks, per_task: list[str], method: str, reference: str,
                      names: Mapping[str, str] | None = None) -> str:
    """The across-task verdict for one pair, with the tally of per-task verdicts."""
    tally = ", ".join(f"{sum(v == x for v in per_task)} {x}" for x in (BETTER, WORSE, NO_DIFF)
                      if any(v == x for v in per_task))
    tally = f"; per task: {tally}" if tally else ""
    if not res.ran:
        why = res.note or ", ".join(f"{display_name(m, names)} lacks {', '.join(v)}" for m, v in res.left_out.items()
                                    if m in (method, reference))
        return f"{NOT_TESTED} (Friedman test not run: {why}){tally}"
    if method not in res.methods or reference not in res.methods:
        gone = [m for m in (method, reference) if m in res.left_out]
        why = "; ".join(f"{display_name(m, names)} has no results on {', '.join(res.left_out[m])}" for m in gone)
        return f"{NOT_TESTED} (not in the Friedman test: {why}){tally}"
    v, p = res.compare(method, reference)
    ranks = f"mean rank {res.mean_ranks[method]:.2f} vs {res.mean_ranks[reference]:.2f}"
    fr = f"Friedman χ²({len(res.methods) - 1}) = {res.statistic:.2f}, {fmt_p(res.p)}, N = {len(res.tasks)} tasks"
    if math.isfinite(p):
        return f"{v} ({ranks}; {fr}; Holm-corrected post-hoc on mean ranks {fmt_p(p)}){tally}"
    return f"{v} ({ranks}; {fr}: not significant, no post-hoc){tally}"


def ordered(methods: Iterable[str], order: Iterable[str] | None = None) -> list[str]:
    """``methods`` in ``order`` (the config's ``methods_run``), the others after them in order of
    appearance."""
    ms = list(dict.fromkeys(methods))
    known = list(order or [])
    return sorted(ms, key=lambda m: (known.index(m) if m in known else len(known), ms.index(m)))


def _task_label(t: TaskTests) -> str:
    d = "higher" if HIGHER_IS_BETTER[t.metric] else "lower"
    return f"{t.dataset} ({METRIC_LABEL.get(t.metric, t.metric)}, {d} is better)"


def comparison_pairs(methods: Iterable[str], order: Iterable[str] | None = None,
                     compare: Iterable[Iterable[str]] = (), names: Mapping[str, str] | None = None
                     ) -> list[tuple[str, list[tuple[str, str]]]]:
    """The findings' groups of (method, reference) pairs: every method against MAE, every method
    against no pretraining, then the configured pairs (``report.compare``) — duplicates dropped."""
    ms = ordered(methods, order)
    groups = [(f"Every method against {display_name(MAE, names)}", [(m, MAE) for m in ms if m != MAE]),
              (f"Every method against {display_name(NO_PRETRAINING, names)}",
               [(m, NO_PRETRAINING) for m in ms if m != NO_PRETRAINING])]
    seen = {p for _, g in groups for p in g}
    extra = []
    for pair in compare:
        a, b = (str(x) for x in pair)
        if (a, b) not in seen and a != b:
            extra.append((a, b))
            seen.add((a, b))
    if extra:
        groups.append(("Configured comparisons (report.compare)", extra))
    return groups


# --- headline, variance, power -------------------------------------------------------------------

HEADLINE_COLUMNS = ["protocol", "reference", "method", "dataset", "metric", "delta", "low", "high", "verdict",
                    "verdict_test", "n_seeds", "splits_per_seed", "cell"]
MARK = {BETTER: " ▲", WORSE: " ▼"}


def _cell(row: dict) -> str:
    if row["verdict"] == NOT_TESTED:
        return f"{_fmt_d(row['delta'])} (not tested, n = {row['n']})"
    return f"{_fmt_d(row['delta'])} [{_fmt_d(row['verdict_low'])}, {_fmt_d(row['verdict_high'])}]" \
           + MARK.get(row["verdict"], "")


def headline_frame(tests: dict[tuple[str, str], TaskTests], reference: str, protocol: str,
                   order: Iterable[str] | None = None) -> pd.DataFrame:
    """``HEADLINE_COLUMNS``: every method against ``reference`` on every task of ``protocol`` that has
    it — the design-aware row of :meth:`TaskTests.compare` (the same numbers as comparisons.csv)."""
    rows = []
    fam = {ds: t for (ds, p), t in tests.items() if p == protocol and reference in t.methods}
    ms = ordered([m for t in fam.values() for m in t.methods], order)
    for m in ms:
        if m == reference:
            continue
        for ds, t in fam.items():
            if m not in t.methods:
                continue
            r = t.compare(m, reference)
            rows.append({"protocol": protocol, "reference": reference, "method": m, "dataset": ds,
                         "metric": t.metric, "delta": r["delta"], "low": r["verdict_low"], "high": r["verdict_high"],
                         "verdict": r["verdict"], "verdict_test": r["verdict_test"], "n_seeds": r["n_seeds"],
                         "splits_per_seed": r["splits_per_seed"], "cell": _cell(r)})
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def headline_markdown(frame: pd.DataFrame, tests: dict[tuple[str, str], TaskTests],
                      names: Mapping[str, str] | None = None) -> list[str]:
    """One methods x tasks table of ``headline_frame`` output (one protocol, one reference)."""
    from .tables import column_header

    if frame.empty:
        return []
    datasets = list(dict.fromkeys(frame["dataset"]))
    metric = dict(zip(frame["dataset"], frame["metric"]))
    labels = unique_labels(frame["method"], names)
    lines = ["| method | " + " | ".join(column_header(ds, metric[ds]) for ds in datasets) + " |",
             "|---|" + "|".join([":---:"] * len(datasets)) + "|"]
    cells = {(r.method, r.dataset): r.cell for r in frame.itertuples(index=False)}
    for m in dict.fromkeys(frame["method"]):
        row = [cells.get((m, ds), "not run") for ds in datasets]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in [labels[m], *row]) + " |")
    n = sorted({int(t.n) for (ds, p), t in tests.items() if ds in datasets and p == frame["protocol"].iloc[0]})
    lines += ["", f"*n = {', '.join(map(str, n))} pretraining seeds per task (a seed's splits averaged first).*"]
    return lines


def variance_frame(tests: dict[tuple[str, str], TaskTests], references: Iterable[str] = (MAE, NO_PRETRAINING),
                   order: Iterable[str] | None = None) -> pd.DataFrame:
    """``design.VARIANCE_COLUMNS``: per task, every method against each reference."""
    rows = [design.variance_rows(key, t.metric, t.scores, m, r)
            for key, t in tests.items() for r in references if r in t.methods
            for m in ordered(t.methods, order) if m != r]
    return pd.DataFrame(rows, columns=design.VARIANCE_COLUMNS)


def power_frame(tests: dict[tuple[str, str], TaskTests], target_delta: Mapping[str, float] | None = None,
                references: Iterable[str] = (MAE, NO_PRETRAINING), order: Iterable[str] | None = None,
                alpha: float = ALPHA, power: float = design.POWER) -> pd.DataFrame:
    """``design.POWER_COLUMNS``: per task, every method against each reference; the stated Δ of
    each metric from ``target_delta`` (default ``design.TARGET_DELTA``)."""
    deltas = {**design.TARGET_DELTA, **(target_delta or {})}
    rows = [design.power_row(key, t.metric, t.scores, m, r, float(deltas[t.metric]), alpha, power)
            for key, t in tests.items() for r in references if r in t.methods
            for m in ordered(t.methods, order) if m != r]
    return pd.DataFrame(rows, columns=design.POWER_COLUMNS)


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f} %"


def variance_markdown(frame: pd.DataFrame, names: Mapping[str, str] | None = None,
                      reference: str = MAE) -> list[str]:
    if not (frame["reference"] == reference).any():
        return [f"No task has {display_name(reference, names)} beside another method: nothing to separate."]
    sub = frame[(frame["reference"] == reference) & frame["var_residual"].notna()]
    if sub.empty:
        return ["Every task has one split per pretraining seed: the whole variance of a difference is between "
                "seeds, nothing to separate."]
    lines = [f"| protocol | task | method − {display_name(reference, names)} | seeds × splits | between seeds | "
             "between splits | residual | design effect | SE with 2× splits | SE with 2× seeds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sub.to_dict("records"):
        lines.append(f"| {r['protocol']} | {r['dataset']} | {display_name(r['method'], names)} | "
                     f"{int(r['n_seeds'])} × {int(r['n_splits'])} | {_pct(r['share_seed'])} | {_pct(r['share_split'])} | "
                     f"{_pct(r['share_residual'])} | {_fmt_v(r['design_effect'], 2)} | "
                     f"{_fmt_v(r['se_ratio_2x_splits'], 2)} | {_fmt_v(r['se_ratio_2x_seeds'], 2)} |")
    return lines


def power_markdown(frame: pd.DataFrame, names: Mapping[str, str] | None = None, reference: str = MAE,
                   units: Mapping[str, str] | None = None) -> list[str]:
    sub = frame[frame["reference"] == reference]
    if sub.empty:
        return [f"No task has {display_name(reference, names)}: nothing to plan against."]
    lines = [f"| protocol | task | method − {display_name(reference, names)} | SD of a seed mean | "
             "MDD, this run's seeds | MDD, 5 seeds | MDD, 10 seeds | stated Δ | seeds needed |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sub.to_dict("records"):
        need = r["seeds_needed"]
        need = (f"{int(need)}" if isinstance(need, (int, float)) and math.isfinite(need)
                else (f"> {design.MAX_SEEDS}" if math.isfinite(r["sd_seed_mean"]) else "n/a"))
        u = f" {units[r['dataset']]}" if units and units.get(r["dataset"]) else ""
        lines.append(f"| {r['protocol']} | {r['dataset']} | {display_name(r['method'], names)} | "
                     f"{_fmt_v(r['sd_seed_mean'])} | {_fmt_v(r['mdd_run_seeds'])} (n = {int(r['n_seeds'])}) | "
                     f"{_fmt_v(r['mdd_5_seeds'])} | {_fmt_v(r['mdd_10_seeds'])} | {r['target_delta']:g}{u} | {need} |")
    return lines


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    from ..atomic import write_bytes_atomic

    return write_bytes_atomic(path, frame.to_csv(index=False).encode("utf-8"))


def _rel(target: Path, out_md: str | Path | None) -> str:
    return Path(os.path.relpath(target.resolve(), Path(out_md or ".").resolve().parent)
                if out_md else target).as_posix()


INTRO = ("**The unit of every verdict is the pretraining seed.** The folds of one seed all read one checkpoint, "
         "so they are repeated measures of it, not independent replicates of the method: each (method, seed)'s "
         "scores are averaged over its splits first, then the methods are compared seed by seed (the exact "
         "equivalent, on balanced data, of the mixed model with the checkpoint as a random effect; "
         "pipeline_src/report/design.py). Δ = method − reference in the task's metric, so Δ > 0 is better for "
         "ROC-AUC, accuracy and Spearman and Δ < 0 is better for RMSE. Per task: repeated-measures ANOVA over all "
         "methods of the protocol (statsmodels AnovaRM, subject = pretraining seed), then Tukey HSD simultaneous "
         "95 % intervals on the methods' seed means with the repeated-measures error term (Ash et al., J. Chem. "
         "Inf. Model. 2025); the verdict is read from that interval, or from the paired t 95 % interval (scipy) on "
         "the seed means where Tukey HSD cannot run; the Wilcoxon signed-rank p (scipy) on the seed means is a check "
         "that does not assume normal differences. The same Tukey HSD with every (seed, split) unit as a subject "
         "is in comparisons.csv (unit \"fold (conditional on these checkpoints)\"): it describes these checkpoints "
         "on these folds, not the method, and gives no verdict. Overall: Friedman test on the per-task mean scores "
         "(ranked by the metric's direction), then the all-pairs post-hoc on mean ranks with Holm's correction "
         f"(scikit-posthocs), read only when Friedman rejects. n = pretraining seeds; N = tasks; α = {ALPHA}.")


def findings_markdown(df: pd.DataFrame, *, figures_dir: str | Path | None = None, out_md: str | Path | None = None,
                      metric_units: dict[str, str] | None = None, protocols: Iterable[str] | None = None,
                      tests: dict[tuple[str, str], TaskTests] | None = None, names: Mapping[str, str] | None = None,
                      order: Iterable[str] | None = None, compare: Iterable[Iterable[str]] = (),
                      target_delta: Mapping[str, float] | None = None,
                      tables_dir: str | Path | None = None) -> list[str]:
    """The report's "Findings" section: the headline tables (every method against MAE and against no
    pretraining, per protocol), then per protocol the tasks, the across-task test and every
    comparison, then where the variance lives and how many seeds a claim needs.

    ``figures_dir``: write one critical-difference diagram per protocol there (``cd_<protocol>.png``)
    and link it relative to ``out_md``. ``tables_dir``: write ``headline.csv``,
    ``variance_components.csv`` and ``power.csv`` there and link them. ``metric_units``: dataset ->
    unit of its metric (e.g. ``{"esol": "log mol/L"}``), written after each Δ. ``protocols``: default
    every protocol holding MAE or no pretraining. ``names``: method -> display name; ``order``: the
    methods' order (``methods_run``); ``compare``: extra (method, reference) pairs;
    ``target_delta``: metric -> the difference the seeds-needed column plans for."""
    df = check_results(df)
    tests = all_task_tests(df) if tests is None else tests
    units = metric_units or {}
    if protocols is None:
        wanted = {MAE, NO_PRETRAINING} | {str(x) for pair in compare for x in pair}
        protocols = [p for p in dict.fromkeys(df["protocol"]) if set(df.loc[df["protocol"] == p, "method"]) & wanted]
    protocols = list(protocols)
    compare = [tuple(str(x) for x in pair) for pair in compare]
    lines = ["## Findings", "", INTRO]
    if not tests:
        return lines + ["", "No results: nothing to compare."]
    tables_p = Path(tables_dir) if tables_dir is not None else None

    # headline
    heads = [headline_frame(tests, ref, p, order) for p in protocols for ref in (MAE, NO_PRETRAINING)]
    heads = [h for h in heads if not h.empty]
    lines += ["", "### Headline: every method against MAE and against no pretraining", "",
              "Each cell: Δ = method − reference [design-aware 95 % interval, the one its verdict is read from: Tukey HSD "
              "on the seed means, else the paired t]; ▲ significantly better, ▼ significantly worse, no mark = no "
              "significant difference."]
    for h in heads:
        p, ref = h["protocol"].iloc[0], h["reference"].iloc[0]
        lines += ["", f"**Protocol `{p}`, against {display_name(ref, names)}**", "", *headline_markdown(h, tests, names)]
    if not heads:
        lines += ["", "- no protocol has MAE or no pretraining beside another method."]
    if tables_p is not None:
        hf = pd.concat(heads, ignore_index=True) if heads else pd.DataFrame(columns=HEADLINE_COLUMNS)
        lines += ["", f"CSV: [headline.csv]({_rel(_write_csv(hf, tables_p / 'headline.csv'), out_md)})"]

    for protocol in protocols:
        fam = {ds: t for (ds, p), t in tests.items() if p == protocol}
        if not fam:
            continue
        res = across_tasks(df, protocol, tests=tests)
        lines += ["", f"### Protocol `{protocol}`", ""]
        for t in fam.values():
            dropped = f" ({t.n_dropped} unit(s) left out: not scored by every method)" if t.n_dropped else ""
            an = (f"repeated-measures ANOVA (subject = pretraining seed) F({t.anova['df_num']:.0f}, "
                  f"{t.anova['df_den']:.0f}) = {t.anova['F']:.2f}, {fmt_p(t.anova['p'])}" if t.anova else
                  f"repeated-measures ANOVA not run: {t.anova_note}")
            lines.append(f"- {_task_label(t)}: {n_text(t)} ({t.n_units} paired units){dropped}, "
                         f"{len(t.methods)} methods; {an}.")
        if res.ran:
            labels = unique_labels(res.methods, names)
            ranks = ", ".join(f"{labels[m]} {r:.2f}" for m, r in res.mean_ranks.sort_values().items())
            lines.append(f"- Across tasks: Friedman χ²({len(res.methods) - 1}) = {res.statistic:.2f}, "
                         f"{fmt_p(res.p)}, N = {len(res.tasks)} tasks, {len(res.methods)} methods; "
                         f"mean ranks (1 = best): {ranks}.")
            if res.left_out:
                lines.append("  Left out of it (not scored on every task): " + "; ".join(
                    f"{display_name(m, names)} (no {', '.join(v)})" for m, v in res.left_out.items()) + ".")
            if figures_dir is not None:
                png = critical_difference_png(res, Path(figures_dir) / f"cd_{protocol}.png", names)
                if png is not None:
                    lines += ["", f"![Critical-difference diagram, protocol {protocol}]({_rel(png, out_md)})"]
        else:
            lines.append(f"- Across tasks: Friedman test not run: {res.note}.")
        present = {m for t in fam.values() for m in t.methods}
        candidates = [*ordered(present, order), *(m for m in (order or []) if m not in present)]
        for title, pairs in comparison_pairs(candidates, order, compare, names):
            if not pairs:
                continue
            lines += ["", f"**{title}**", ""]
            refs = {r for _, r in pairs}
            if len(refs) == 1 and not refs & present and not set(pairs) & set(compare):
                lines.append(f"- skipped: no results for {display_name(refs.pop(), names)} in this protocol.")
                continue
            for m, r in pairs:
                absent = [x for x in (m, r) if x not in present]
                head = f"{display_name(m, names)} vs {display_name(r, names)}"
                if absent:
                    lines.append(f"- {head}: skipped, no results for "
                                 f"{' or '.join(display_name(x, names) for x in absent)} in this protocol.")
                    continue
                lines.append(f"- {head}:")
                verdicts = []
                for ds, t in fam.items():
                    if m in t.methods and r in t.methods:
                        verdicts.append(t.compare(m, r)["verdict"])
                        lines.append(f"  - {ds}: {task_statement(t, m, r, units.get(ds, ''))}")
                    else:
                        lines.append(f"  - {ds}: skipped, no results for "
                                     f"{' or '.join(display_name(x, names) for x in (m, r) if x not in t.methods)}")
                lines.append(f"  - overall: {overall_statement(res, verdicts, m, r, names)}")

    ftests = {k: t for k, t in tests.items() if k[1] in protocols}
    var = variance_frame(ftests, order=order)
    lines += ["", "### Where the variance lives", "",
              "Per task, the variance of the unit-wise differences method − MAE split into a part between pretraining "
              "seeds (the two checkpoints differ), a part between splits (shared by every seed: the method suits some "
              "folds better) and the residual (seed × split interaction and noise): a two-way random model without "
              "replication, from the mean squares of statsmodels' anova_lm and their expected values, truncated at 0. "
              "Design effect = this design's variance of the mean difference over the one of as many independent "
              "units (1 + (K − 1) × the seed share when the split part is 0): the factor by which treating folds as "
              "independent understates it. The last two columns: the standard error of the mean difference with twice "
              "the splits or twice the seeds, over today's (splits drawn anew each time).", "",
              *variance_markdown(var, names)]
    pw = power_frame(ftests, target_delta, order=order)
    lines += ["", "### How many seeds a claim needs", "",
              "Minimum detectable difference (MDD) against MAE at 80 % power, α = 0.05, for the design-aware test of "
              "one pair: the two-sided paired t on the pretraining seeds' mean differences (statsmodels TTestPower, "
              "noncentral t), with the SD of a seed mean from the variance components above (sqrt(between-seed + "
              "residual / splits per seed)), or from the seed means themselves where a seed has one split. Tukey HSD "
              "over several methods is wider, so these are the best case. Seeds needed: the fewest pretraining seeds "
              "that detect the stated Δ (config `report.target_delta`) at that power, with the same splits per seed.",
              "", *power_markdown(pw, names, units=units)]
    if tables_p is not None:
        v = _rel(_write_csv(var, tables_p / "variance_components.csv"), out_md)
        q = _rel(_write_csv(pw, tables_p / "power.csv"), out_md)
        lines += ["", f"CSV: [variance_components.csv]({v}), [power.csv]({q}) (against MAE and against no pretraining)."]
    return lines
