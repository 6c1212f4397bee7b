"""The pretraining run as the unit of replication: seed means, variance components, power.

An evaluation unit is ``seed<k>/<split>``: one pretraining seed (one checkpoint per method) read on
one split or fold. The folds of one seed all read the same checkpoint's features, so a checkpoint
that happens to be good or bad moves all of its folds together: folds are repeated measures inside
a pretraining run, not independent replicates of the method. A claim about a *method* ("SMA beats
MAE") has the pretraining seed as its replication unit.

**The design-aware test (two-stage, exact on balanced data).** Model of one task's scores::

    y[m, s, f] = mu + alpha[m] + b[s] + c[m, s] + g[f] + h[m, f] + e[m, s, f]

method ``m`` fixed; pretraining seed ``s``, checkpoint ``c = method x seed`` random; split ``f``
(the run's folds, the same for every seed and method, held fixed: the claim is about new
pretraining runs on this benchmark's splits). The test of the method effect uses the checkpoint
(method x seed) mean square as its error term: E[MS_method] = sigma_e^2 + F sigma_c^2 + S F theta_m
and E[MS_method:seed] = sigma_e^2 + F sigma_c^2 (Montgomery, *Design and Analysis of Experiments*,
8th ed., §13.4–13.5, expected mean squares of the mixed model; Searle, Casella & McCulloch,
*Variance Components*, 1992, ch. 4: for balanced data the ANOVA F test is the exact test of the
mixed model). On balanced data both mean squares are ``F`` times the ones of the repeated-measures
ANOVA on the checkpoint means ``ybar[m, s]`` (each (method, seed)'s folds averaged), so that
ANOVA — and the Tukey HSD with its error term — *is* the mixed-model test (Cox & Reid, *The
Theory of the Design of Experiments*, 2000, §6.4: analyse a split unit design at the level of the
unit that receives the treatment; Murray, *Design and Analysis of Group-Randomized Trials*, 1998:
the analysis on cluster means is the exact equivalent of the nested mixed model). Folds then enter
only through the precision of each seed mean. :func:`seed_means` is stage one; the report's
repeated-measures ANOVA + Tukey HSD (:mod:`.stats`) on its output is stage two.
tests/unit/test_stats_design.py checks the equality against the unit-level ANOVA with the
checkpoint error term (statsmodels ``anova_lm``). A task with one split per seed (HIGGS, HIV
scaffold, TAPE) has seed means equal to its units: nothing changes for it.

**Where the variance lives.** For one method against a reference, the unit-wise differences
``D[s, f] = y[m, s, f] − y[ref, s, f]`` follow the two-way random model without replication
``D = delta + u[s] + v[f] + w[s, f]``: ``u`` between pretraining seeds (the two checkpoints
differ), ``v`` between splits (one method suits some folds better, shared by every seed), ``w``
the seed x split interaction confounded with noise. Expected mean squares: E[MS_seed] = K var_u +
var_w, E[MS_split] = S var_v + var_w, E[MS_res] = var_w (Montgomery §13.3), estimated from the
mean squares of statsmodels' ``anova_lm`` and truncated at 0.

**How many seeds.** The design-aware test of one pair is the paired t on the S seed means of the
differences (Tukey HSD over two methods is exactly that; with more methods Tukey is wider, so the
figures are the best case for one comparison). A seed mean of D has variance
``var_u + var_w / K`` (the splits are the same for every seed, ``v`` does not vary between
seeds); the minimum detectable difference at power 1 − β and the seeds needed for a stated Δ come
from statsmodels' ``TTestPower`` (noncentral t).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000                 # seeds_needed reports "more than this" beyond it
SEED_UNIT = "pretraining seed"
FOLD_UNIT = "fold (conditional on these checkpoints)"
# smallest difference worth detecting, per metric (report.target_delta overrides; config/README.md)
TARGET_DELTA: dict[str, float] = {"roc_auc": 0.01, "accuracy": 0.01, "spearman": 0.02, "rmse": 0.05}


def unit_seed(unit: str) -> str:
    """``seed1/scaffold_cv_r0_f3`` -> ``seed1``; a unit without ``/`` is its own seed."""
    return str(unit).split("/", 1)[0]


def unit_split(unit: str) -> str:
    """``seed1/scaffold_cv_r0_f3`` -> ``scaffold_cv_r0_f3``; ``""`` for a unit without ``/``."""
    parts = str(unit).split("/", 1)
    return parts[1] if len(parts) == 2 else ""


def seed_means(scores: pd.DataFrame) -> pd.DataFrame:
    """[units, methods] paired scores -> [seeds, methods]: each checkpoint's mean over its splits.

    ``attrs``: ``splits_per_seed`` ({seed: number of splits}), ``balanced`` (every seed has the
    same number of splits). The seeds are sorted; a seed's row is the mean of its units' rows."""
    seeds = pd.Index([unit_seed(u) for u in scores.index], dtype=object, name="seed")
    out = scores.groupby(seeds, sort=True).mean()
    out.index = pd.Index([str(s) for s in out.index], dtype=object, name="seed")
    out.columns = pd.Index(list(scores.columns), dtype=object, name=scores.columns.name)
    counts = pd.Series(1, index=seeds).groupby(level=0, sort=True).sum()
    out.attrs["splits_per_seed"] = {str(k): int(v) for k, v in counts.items()}
    out.attrs["balanced"] = len(set(counts.tolist())) <= 1
    return out


def splits_per_seed(scores: pd.DataFrame) -> int | None:
    """The number of splits every seed of [units, methods] has; None when they differ."""
    n = set(seed_means(scores).attrs["splits_per_seed"].values()) if len(scores) else set()
    return n.pop() if len(n) == 1 else None


def difference_grid(scores: pd.DataFrame, method: str, reference: str) -> pd.DataFrame:
    """[seeds, splits] of method − reference per unit; NaN where a (seed, split) unit is missing."""
    d = scores[method] - scores[reference]
    long = pd.DataFrame({"seed": [unit_seed(u) for u in d.index], "split": [unit_split(u) for u in d.index],
                         "d": d.to_numpy(float)})
    return long.pivot(index="seed", columns="split", values="d")


# --- variance components -----------------------------------------------------------------------


@dataclass
class Components:
    """Variance components of the differences D[s, f] (method − reference), metric units squared."""

    n_seeds: int
    n_splits: int
    ms_seed: float
    ms_split: float
    ms_residual: float
    var_seed: float
    var_split: float
    var_residual: float

    @property
    def total(self) -> float:
        return self.var_seed + self.var_split + self.var_residual

    def share(self, part: str) -> float:
        """``seed``, ``split`` or ``residual``'s share of the total (NaN when the total is 0)."""
        v = {"seed": self.var_seed, "split": self.var_split, "residual": self.var_residual}[part]
        return v / self.total if self.total > 0 else math.nan

    @property
    def var_seed_mean(self) -> float:
        """Variance of one seed's mean difference over its K splits: var_seed + var_residual / K."""
        return self.var_seed + self.var_residual / self.n_splits

    def var_estimate(self, n_seeds: int, n_splits: int) -> float:
        """Variance of the mean difference over S seeds x K splits, splits drawn anew:
        var_seed / S + var_split / K + var_residual / (S K)."""
        return self.var_seed / n_seeds + self.var_split / n_splits + self.var_residual / (n_seeds * n_splits)

    @property
    def design_effect(self) -> float:
        """This design's variance of the mean difference over the one of S·K independent units:
        (K var_seed + S var_split + var_residual) / (var_seed + var_split + var_residual)
        (1 + (K − 1) ρ when var_split = 0, ρ the seed share)."""
        if not self.total > 0:
            return math.nan
        return self.var_estimate(self.n_seeds, self.n_splits) * self.n_seeds * self.n_splits / self.total

    def se_ratio(self, seeds_factor: int = 1, splits_factor: int = 1) -> float:
        """Standard error of the mean difference with ``seeds_factor`` x the seeds and
        ``splits_factor`` x the splits, over the one of this design."""
        now = self.var_estimate(self.n_seeds, self.n_splits)
        if not now > 0:
            return math.nan
        return math.sqrt(self.var_estimate(self.n_seeds * seeds_factor, self.n_splits * splits_factor) / now)


def variance_components(grid: pd.DataFrame) -> Components:
    """The two-way random model without replication on a complete [seeds, splits] grid of
    differences: mean squares from statsmodels (``ols`` + ``anova_lm``), components from their
    expected values, truncated at 0. Raises ``ValueError`` for a missing cell or fewer than 2
    seeds or 2 splits."""
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    S, K = grid.shape
    if S < 2 or K < 2:
        raise ValueError(f"{S} seed(s) x {K} split(s): variance components need at least 2 of each")
    if grid.isna().any().any():
        raise ValueError("the seed x split grid has missing units: variance components need every unit")
    long = grid.rename_axis(index="seed", columns="split").stack().rename("d").reset_index()
    long["seed"], long["split"] = long["seed"].astype(str), long["split"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # a perfect fit: F = inf / nan
        tab = anova_lm(ols("d ~ C(seed) + C(split)", data=long).fit())
    eps = (1e-12 * max(1.0, float(np.abs(grid.to_numpy(float)).max()))) ** 2   # rounding noise of the fit
    ms_s, ms_f, ms_e = (float(tab.loc[k, "mean_sq"]) for k in ("C(seed)", "C(split)", "Residual"))
    ms_s, ms_f, ms_e = (0.0 if abs(x) <= eps else x for x in (ms_s, ms_f, ms_e))
    return Components(S, K, ms_s, ms_f, ms_e, max(0.0, (ms_s - ms_e) / K), max(0.0, (ms_f - ms_e) / S), ms_e)


# --- power -------------------------------------------------------------------------------------


def min_detectable(sd: float, n_seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |Δ| the two-sided paired t on ``n_seeds`` seed means detects with ``power``, in the
    units of ``sd`` (the standard deviation of one seed's mean difference). NaN below 2 seeds."""
    from statsmodels.stats.power import TTestPower

    if n_seeds < 2 or not (math.isfinite(sd) and sd >= 0):
        return math.nan
    if sd == 0:
        return 0.0
    es = TTestPower().solve_power(effect_size=None, nobs=n_seeds, alpha=alpha, power=power,
                                  alternative="two-sided")
    return float(es) * sd


def power_at(delta: float, sd: float, n_seeds: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t on ``n_seeds`` seed means for a true difference ``delta``."""
    from statsmodels.stats.power import TTestPower

    if n_seeds < 2 or not (math.isfinite(sd) and sd > 0):
        return math.nan
    return float(TTestPower().power(effect_size=abs(delta) / sd, nobs=n_seeds, alpha=alpha,
                                    alternative="two-sided"))


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest pretraining seeds (≥ 2) whose paired t detects ``delta`` with ``power``; None
    when more than ``max_seeds`` are needed or sd is not finite. 2 when sd = 0."""
    if not (math.isfinite(sd) and sd >= 0) or delta == 0:
        return None
    if sd == 0:
        return 2
    n = 2
    while n <= max_seeds:                         # power grows with n: the first n that reaches it
        if power_at(delta, sd, n, alpha) >= power:
            return n
        n = n + 1 if n < 64 else int(n * 1.05) + 1
    return None


# --- per-task tables ---------------------------------------------------------------------------

VARIANCE_COLUMNS = ["dataset", "protocol", "metric", "method", "reference", "n_seeds", "n_splits", "ms_seed",
                    "ms_split", "ms_residual", "var_seed", "var_split", "var_residual", "share_seed", "share_split",
                    "share_residual", "design_effect", "se_ratio_2x_splits", "se_ratio_2x_seeds", "note"]
POWER_COLUMNS = ["dataset", "protocol", "metric", "method", "reference", "n_seeds", "splits_per_seed",
                 "sd_seed_mean", "sd_source", "mdd_run_seeds", "mdd_5_seeds", "mdd_10_seeds", "target_delta",
                 "seeds_needed", "alpha", "power"]


def components_row(scores: pd.DataFrame, method: str, reference: str) -> tuple[Components | None, str]:
    """The components of one pair on [units, methods] and why there are none (one split per seed,
    missing units)."""
    grid = difference_grid(scores, method, reference)
    if grid.shape[1] < 2:
        return None, "one split per seed: nothing to separate"
    try:
        return variance_components(grid), ""
    except ValueError as e:
        return None, str(e)


def variance_rows(key: tuple[str, str], metric: str, scores: pd.DataFrame, method: str,
                  reference: str) -> dict:
    """One row of ``VARIANCE_COLUMNS``."""
    comp, note = components_row(scores, method, reference)
    base = {"dataset": key[0], "protocol": key[1], "metric": metric, "method": method, "reference": reference,
            "note": note}
    if comp is None:
        grid = difference_grid(scores, method, reference)
        return {**{c: math.nan for c in VARIANCE_COLUMNS}, **base, "n_seeds": grid.shape[0], "n_splits": grid.shape[1]}
    d = asdict(comp)
    return {**base, **d, "share_seed": comp.share("seed"), "share_split": comp.share("split"),
            "share_residual": comp.share("residual"), "design_effect": comp.design_effect,
            "se_ratio_2x_splits": comp.se_ratio(splits_factor=2), "se_ratio_2x_seeds": comp.se_ratio(seeds_factor=2)}


def power_row(key: tuple[str, str], metric: str, scores: pd.DataFrame, method: str, reference: str,
              target_delta: float, alpha: float = ALPHA, power: float = POWER) -> dict:
    """One row of ``POWER_COLUMNS``: sd of a seed mean of the differences from the components
    (sqrt(var_seed + var_residual / K)), or, with one split per seed or missing units, the sample
    sd of the seed means themselves."""
    comp, _ = components_row(scores, method, reference)
    means = seed_means(scores[[method, reference]])
    if comp is not None:
        sd, source, k = math.sqrt(comp.var_seed_mean), "variance components", comp.n_splits
    else:
        d = (means[method] - means[reference]).to_numpy(float)
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else math.nan
        source, k = "sd of the seed means", splits_per_seed(scores)
    n = len(means)
    if math.isfinite(sd) and sd <= 1e-12 * max(1.0, float(np.abs(means.to_numpy(float)).max())):
        sd = 0.0                                  # identical differences on every seed, up to rounding
    need = seeds_needed(target_delta, sd, alpha, power)
    return {"dataset": key[0], "protocol": key[1], "metric": metric, "method": method, "reference": reference,
            "n_seeds": n, "splits_per_seed": k if k is not None else math.nan, "sd_seed_mean": sd,
            "sd_source": source, "mdd_run_seeds": min_detectable(sd, n, alpha, power),
            "mdd_5_seeds": min_detectable(sd, 5, alpha, power), "mdd_10_seeds": min_detectable(sd, 10, alpha, power),
            "target_delta": target_delta, "seeds_needed": need if need is not None else math.nan,
            "alpha": alpha, "power": power}
