"""Paired significance tests behind the report's findings, all from kept libraries.

Input: a tidy frame with one row per scored evaluation, columns ``dataset, method, protocol, unit,
test, metric``. ``unit`` names a paired evaluation unit (e.g. ``seed1/scaffold_cv_r0_f3``): the same
string means the same fold and the same pretraining seed for every method, so two methods can be
compared unit by unit. ``metric`` is ``roc_auc``, ``accuracy``, ``spearman`` (higher is better) or
``rmse`` (lower is better); one metric per dataset.

Per task (dataset × protocol), on the units every method of the protocol has (``paired_units``):

- Δ = method − reference, the mean of the unit-wise differences in the metric's units; a paired t
  95 % interval (``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank p (``scipy.stats.wilcoxon``;
  NaN, with the reason, when every difference is zero or fewer than 6 are non-zero: with 5 the
  smallest two-sided p it can give is 0.0625).
- repeated-measures ANOVA over all methods (``statsmodels`` ``AnovaRM``, subject = unit), then
  Tukey HSD simultaneous 95 % intervals for every pair of methods, as Ash et al. (J. Chem. Inf.
  Model. 2025) do: statsmodels' Tukey HSD routine (the one ``pairwise_tukeyhsd`` calls) applied to
  the per-method means over the paired units, with the repeated-measures error term — the residual
  mean square of the additive model score ~ method + unit (statsmodels OLS), df = (n−1)(k−1) —
  instead of the between-unit variance that ``pairwise_tukeyhsd`` would use on unpaired groups.
  Tukey HSD controls the family-wise error by itself, so it is read whatever the ANOVA's p.
- verdict: ``better`` / ``worse`` when the Tukey interval excludes 0 (direction from the metric),
  else ``no significant difference``; the paired t interval decides when Tukey cannot run (fewer
  than 2 units, or no residual variance); ``not tested`` when neither can (n < 2).

Across tasks (one protocol; tasks = its datasets; methods = those scored on every task): Friedman
test (``scipy.stats.friedmanchisquare``) on the per-task mean scores, oriented so that higher is
better (RMSE negated), then the all-pairs post-hoc on mean ranks with Holm's correction (Demšar
2006; García & Herrera 2008; ``scikit_posthocs.posthoc_siegel_friedman``, p_adjust="holm"); the
post-hoc is read only when Friedman rejects. Not run, with the reason, for fewer than 3 tasks or
3 methods. A critical-difference diagram (``scikit_posthocs.critical_difference_diagram``).

Bolding (``significantly_best``): per task, the method with the best mean over the paired units,
plus every method whose Tukey interval against it contains 0 — and nothing at all unless the best
is significantly better than at least one other method (so a column of indistinguishable methods
has no bold).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..paths import HIGHER_IS_BETTER
from .tables import METRIC_LABEL

ALPHA = 0.05
MIN_WILCOXON_NONZERO = 6
COLUMNS = ["dataset", "method", "protocol", "unit", "test", "metric"]
BETTER, WORSE, NO_DIFF, NOT_TESTED = "better", "worse", "no significant difference", "not tested"
TUKEY_TEST = "Tukey HSD after repeated-measures ANOVA"
PAIRED_T_TEST = "paired t interval"
NO_RESIDUAL = "no residual variance (every unit shows the same differences between methods)"

DISPLAY_NAMES: dict[str, str] = {
    "none": "no pretraining",
    "random": "MAE (random)",
    "sma": "SMA",
    "r2mae": "R2MAE",
    "metamae": "MetaMAE",
    "sma_r2": "SMA+R2MAE",
    "span": "span masking (not domain-agnostic)",
    # classical baselines (pipeline_src/evaluate/baselines.py): domain-specific, no pretraining
    "rf_morgan": "RF on Morgan FP",
    "gbm": "gradient boosting on the raw features",
    "aac_linear": "linear model on amino-acid composition",
}

COMPARISON_COLUMNS = ["dataset", "protocol", "metric", "method", "reference", "delta", "ci_low", "ci_high", "n",
                      "n_dropped", "p_wilcoxon", "wilcoxon_note", "tukey_low", "tukey_high", "tukey_reject",
                      "anova_F", "anova_p", "verdict", "verdict_test"]


def display_name(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


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


@dataclass
class TaskTests:
    """Every test of one (dataset, protocol) family, on its paired units."""

    dataset: str
    protocol: str
    metric: str
    scores: pd.DataFrame                     # [n units, k methods], paired
    n_dropped: int
    anova: dict[str, float] | None           # F, df_num, df_den, p
    anova_note: str
    tukey: dict[tuple[str, str], tuple[float, float, float, bool]] | None  # (method, ref) -> (Δ, low, high, reject)
    tukey_note: str

    @property
    def methods(self) -> list[str]:
        return list(self.scores.columns)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def means(self) -> pd.Series:
        return self.scores.mean(axis=0)

    def pair(self, method: str, reference: str) -> Paired:
        return paired_difference(self.scores[method].to_numpy(), self.scores[reference].to_numpy())

    def compare(self, method: str, reference: str) -> dict:
        """One comparison row (see ``COMPARISON_COLUMNS``)."""
        p = self.pair(method, reference)
        t = (self.tukey or {}).get((method, reference))
        if t is not None:
            v, test = verdict(self.metric, t[1], t[2]), TUKEY_TEST
        else:
            v = verdict(self.metric, p.ci_low, p.ci_high)
            test = PAIRED_T_TEST if v != NOT_TESTED else ""
        a = self.anova or {}
        return {"dataset": self.dataset, "protocol": self.protocol, "metric": self.metric, "method": method,
                "reference": reference, "delta": p.delta, "ci_low": p.ci_low, "ci_high": p.ci_high, "n": p.n,
                "n_dropped": self.n_dropped, "p_wilcoxon": p.p_wilcoxon, "wilcoxon_note": p.wilcoxon_note,
                "tukey_low": t[1] if t else math.nan, "tukey_high": t[2] if t else math.nan,
                "tukey_reject": bool(t[3]) if t else pd.NA, "anova_F": a.get("F", math.nan),
                "anova_p": a.get("p", math.nan), "verdict": v, "verdict_test": test}


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


def task_tests(df: pd.DataFrame, dataset: str, protocol: str, methods: Iterable[str] | None = None) -> TaskTests:
    """All per-task tests for ``methods`` (default: every method with results for this dataset and protocol)."""
    df = check_results(df)
    sub = df[(df["dataset"] == dataset) & (df["protocol"] == protocol)]
    if sub.empty:
        raise ValueError(f"no results for dataset {dataset!r}, protocol {protocol!r}")
    if methods is None:
        methods = list(dict.fromkeys(sub["method"]))
    scores = paired_units(sub, dataset, protocol, methods)
    n, k = scores.shape
    anova, anova_note, tukey, tukey_note = None, "", None, ""
    if k < 2:
        anova_note = tukey_note = f"{k} method(s): nothing to compare"
    elif n < 2:
        anova_note = tukey_note = f"n = {n} paired unit(s): at least 2 are needed"
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
    return TaskTests(dataset, protocol, _metric(sub, dataset), scores, int(scores.attrs["n_dropped"]),
                     anova, anova_note, tukey, tukey_note)


def all_task_tests(df: pd.DataFrame) -> dict[tuple[str, str], TaskTests]:
    """(dataset, protocol) -> its tests, for every pair in ``df`` (in order of appearance)."""
    df = check_results(df)
    keys = list(dict.fromkeys(zip(df["dataset"], df["protocol"])))
    return {(ds, p): task_tests(df, ds, p) for ds, p in keys}


def compare_methods(df: pd.DataFrame, references: Iterable[str] | None = ("random", "none"),
                    tests: dict[tuple[str, str], TaskTests] | None = None) -> pd.DataFrame:
    """Tidy table of comparisons (``COMPARISON_COLUMNS``): in every task, every method against each
    of ``references`` present there (``None``: against every other method, all ordered pairs)."""
    tests = all_task_tests(df) if tests is None else tests
    rows = []
    for t in tests.values():
        refs = t.methods if references is None else [r for r in references if r in t.methods]
        rows += [t.compare(m, r) for r in refs for m in t.methods if m != r]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def significantly_best(df: pd.DataFrame, tests: dict[tuple[str, str], TaskTests] | None = None
                       ) -> dict[tuple[str, str], set[str]]:
    """(dataset, protocol) -> the methods to bold: the best mean (metric direction) plus every method
    whose Tukey interval against it contains 0; empty when Tukey could not run or the best is not
    significantly better than any other method."""
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


def critical_difference_png(res: AcrossTasks, path: str | Path) -> Path | None:
    """Critical-difference diagram (mean ranks; a bar joins methods the Holm post-hoc does not
    separate — all of them when Friedman does not reject). None when the test did not run."""
    if not res.ran:
        return None
    import scikit_posthocs as sp

    from .figures import plt, save_png

    names = {m: display_name(m) for m in res.methods}
    sig = res.posthoc if (res.posthoc is not None and res.p < ALPHA) else \
        pd.DataFrame(1.0, index=res.methods, columns=res.methods)
    sig = sig.rename(index=names, columns=names)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.3 * len(res.methods)))
    sp.critical_difference_diagram(res.mean_ranks.rename(index=names), sig, ax=ax, alpha=ALPHA,
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
    return "n/a" if not math.isfinite(x) else f"{x:+.3f}".replace("-", "−")


# (question, [(method, reference), ...]); "*" = every method of the protocol but the reference
QUESTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Does pretraining beat no pretraining?", [("*", "none")]),
    ("Does SMA beat random masking?", [("sma", "random")]),
    ("Does R2MAE beat random masking?", [("r2mae", "random")]),
    ("Does MetaMAE beat random masking?", [("metamae", "random")]),
    ("Does the new SMA+R2MAE combination beat random masking, and SMA?", [("sma_r2", "random"), ("sma_r2", "sma")]),
]
QUESTION_METHODS = {"none", "random", "sma", "r2mae", "metamae", "sma_r2"}


def task_statement(t: TaskTests, method: str, reference: str, unit: str = "") -> str:
    """``better (Δ = +0.031, 95 % CI [+0.012, +0.050], n = 15; Tukey HSD over 6 methods; Wilcoxon signed-rank
    p = 0.0006)``: the interval is the one the verdict was read from (Tukey simultaneous, else paired t)."""
    row = t.compare(method, reference)
    u = f" {unit}" if unit else ""
    if row["verdict_test"] == TUKEY_TEST:
        lo, hi, how = row["tukey_low"], row["tukey_high"], f"Tukey HSD over {len(t.methods)} methods"
    else:
        lo, hi, how = row["ci_low"], row["ci_high"], PAIRED_T_TEST
        if t.tukey_note:
            how += f" (Tukey HSD not run: {t.tukey_note})"
    w = (f"Wilcoxon signed-rank {fmt_p(row['p_wilcoxon'])}" if math.isfinite(row["p_wilcoxon"])
         else f"Wilcoxon signed-rank not run: {row['wilcoxon_note']}")
    if row["verdict"] == NOT_TESTED:
        return f"{NOT_TESTED} (Δ = {_fmt_d(row['delta'])}{u}, n = {row['n']}: at least 2 paired units are needed)"
    return (f"{row['verdict']} (Δ = {_fmt_d(row['delta'])}{u}, 95 % CI [{_fmt_d(lo)}, {_fmt_d(hi)}], "
            f"n = {row['n']}; {how}; {w})")


def overall_statement(res: AcrossTasks, per_task: list[str], method: str, reference: str) -> str:
    """The across-task verdict for one pair, with the tally of per-task verdicts."""
    tally = ", ".join(f"{sum(v == x for v in per_task)} {x}" for x in (BETTER, WORSE, NO_DIFF)
                      if any(v == x for v in per_task))
    tally = f"; per task: {tally}" if tally else ""
    if not res.ran:
        why = res.note or ", ".join(f"{display_name(m)} lacks {', '.join(v)}" for m, v in res.left_out.items()
                                    if m in (method, reference))
        return f"{NOT_TESTED} (Friedman test not run: {why}){tally}"
    if method not in res.methods or reference not in res.methods:
        gone = [m for m in (method, reference) if m in res.left_out]
        why = "; ".join(f"{display_name(m)} has no results on {', '.join(res.left_out[m])}" for m in gone)
        return f"{NOT_TESTED} (not in the Friedman test: {why}){tally}"
    v, p = res.compare(method, reference)
    ranks = f"mean rank {res.mean_ranks[method]:.2f} vs {res.mean_ranks[reference]:.2f}"
    fr = f"Friedman χ²({len(res.methods) - 1}) = {res.statistic:.2f}, {fmt_p(res.p)}, N = {len(res.tasks)} tasks"
    if math.isfinite(p):
        return f"{v} ({ranks}; {fr}; Holm-corrected post-hoc on mean ranks {fmt_p(p)}){tally}"
    return f"{v} ({ranks}; {fr}: not significant, no post-hoc){tally}"


def _ordered(methods: Iterable[str]) -> list[str]:
    """Methods in ``DISPLAY_NAMES`` order, unknown ones after them in order of appearance."""
    ms = list(dict.fromkeys(methods))
    known = list(DISPLAY_NAMES)
    return sorted(ms, key=lambda m: (known.index(m) if m in known else len(known), ms.index(m)))


def _task_label(t: TaskTests) -> str:
    d = "higher" if HIGHER_IS_BETTER[t.metric] else "lower"
    return f"{t.dataset} ({METRIC_LABEL.get(t.metric, t.metric)}, {d} is better)"


def findings_markdown(df: pd.DataFrame, *, figures_dir: str | Path | None = None, out_md: str | Path | None = None,
                      metric_units: dict[str, str] | None = None, protocols: Iterable[str] | None = None,
                      tests: dict[tuple[str, str], TaskTests] | None = None) -> list[str]:
    """The report's "Findings" section. ``figures_dir``: write one critical-difference diagram per
    protocol there (``cd_<protocol>.png``) and link it relative to ``out_md``. ``metric_units``:
    dataset -> unit of its metric (e.g. ``{"esol": "log mol/L"}``), written after each Δ.
    ``protocols``: default every protocol holding any method the questions name."""
    df = check_results(df)
    tests = all_task_tests(df) if tests is None else tests
    units = metric_units or {}
    if protocols is None:
        protocols = [p for p in dict.fromkeys(df["protocol"])
                     if set(df.loc[df["protocol"] == p, "method"]) & QUESTION_METHODS]
    lines = ["## Findings", "",
             "Each statement compares a method with a reference on the paired evaluation units (the same "
             "pretraining seed and the same fold for both): Δ = method − reference in the task's metric, "
             "so Δ > 0 is better for ROC-AUC, accuracy and Spearman and Δ < 0 is better for RMSE. "
             f"Per task: repeated-measures ANOVA over all methods of the protocol (statsmodels AnovaRM, "
             f"subject = unit), then Tukey HSD simultaneous 95 % intervals on the methods' means over the "
             f"paired units with the repeated-measures error term (Ash et al., J. Chem. Inf. Model. 2025); "
             f"the verdict is read from that interval, or from the paired t 95 % interval (scipy) where "
             f"Tukey HSD cannot run; the Wilcoxon signed-rank p (scipy) is a check that does not assume "
             f"normal differences. Overall: Friedman test on the per-task mean scores (ranked by the "
             f"metric's direction), then the all-pairs post-hoc on mean ranks with Holm's correction "
             f"(scikit-posthocs), read only when Friedman rejects. n = paired units; N = tasks; α = {ALPHA}."]
    if not tests:
        return lines + ["", "No results: nothing to compare."]
    for protocol in protocols:
        fam = {ds: t for (ds, p), t in tests.items() if p == protocol}
        if not fam:
            continue
        res = across_tasks(df, protocol, tests=tests)
        lines += ["", f"### Protocol `{protocol}`", ""]
        for t in fam.values():
            dropped = f" ({t.n_dropped} unit(s) left out: not scored by every method)" if t.n_dropped else ""
            an = (f"repeated-measures ANOVA F({t.anova['df_num']:.0f}, {t.anova['df_den']:.0f}) = "
                  f"{t.anova['F']:.2f}, {fmt_p(t.anova['p'])}" if t.anova else
                  f"repeated-measures ANOVA not run: {t.anova_note}")
            lines.append(f"- {_task_label(t)}: n = {t.n} paired units{dropped}, {len(t.methods)} methods; {an}.")
        if res.ran:
            ranks = ", ".join(f"{display_name(m)} {r:.2f}" for m, r in res.mean_ranks.sort_values().items())
            lines.append(f"- Across tasks: Friedman χ²({len(res.methods) - 1}) = {res.statistic:.2f}, "
                         f"{fmt_p(res.p)}, N = {len(res.tasks)} tasks, {len(res.methods)} methods; "
                         f"mean ranks (1 = best): {ranks}.")
            if res.left_out:
                lines.append("  Left out of it (not scored on every task): " + "; ".join(
                    f"{display_name(m)} (no {', '.join(v)})" for m, v in res.left_out.items()) + ".")
            if figures_dir is not None:
                png = critical_difference_png(res, Path(figures_dir) / f"cd_{protocol}.png")
                if png is not None:
                    href = Path(os.path.relpath(png.resolve(), Path(out_md or ".").resolve().parent)
                                if out_md else png).as_posix()
                    lines += ["", f"![Critical-difference diagram, protocol {protocol}]({href})"]
        else:
            lines.append(f"- Across tasks: Friedman test not run: {res.note}.")
        present = {m for t in fam.values() for m in t.methods}
        for question, pairs in QUESTIONS:
            lines += ["", f"**{question}**", ""]
            expanded = []
            for m, r in pairs:
                ms = [x for x in _ordered(df.loc[df["protocol"] == protocol, "method"]) if x != r] if m == "*" else [m]
                expanded += [(x, r) for x in ms]
            for m, r in expanded:
                absent = [x for x in (m, r) if x not in present]
                head = f"{display_name(m)} vs {display_name(r)}"
                if absent:
                    lines.append(f"- {head}: skipped, no results for {' or '.join(display_name(x) for x in absent)} "
                                 f"in this protocol.")
                    continue
                lines.append(f"- {head}:")
                verdicts = []
                for ds, t in fam.items():
                    if m in t.methods and r in t.methods:
                        verdicts.append(t.compare(m, r)["verdict"])
                        lines.append(f"  - {ds}: {task_statement(t, m, r, units.get(ds, ''))}")
                    else:
                        lines.append(f"  - {ds}: skipped, no results for "
                                     f"{' or '.join(display_name(x) for x in (m, r) if x not in t.methods)}")
                lines.append(f"  - overall: {overall_statement(res, verdicts, m, r)}")
            if not expanded:
                lines.append("- skipped: no method to compare in this protocol.")
    return lines
