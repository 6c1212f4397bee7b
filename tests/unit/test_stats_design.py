"""The pretraining seed as the unit of replication (pipeline_src/report/design.py): the two-stage
test against the mixed model, fixed-split tasks unchanged, a simulation of false positives and
power, variance components and power figures against hand-computed and library values, and the
comparisons' units."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pipeline_src.report import design as D
from pipeline_src.report import stats as S


def nested_frame(y: np.ndarray, dataset: str = "bbbp", metric: str = "roc_auc", protocol: str = "linear",
                 methods: list[str] | None = None) -> pd.DataFrame:
    """Tidy results from y[method, seed, split]: unit ``seed<s>/scaffold_cv_r0_f<f>``."""
    M, Sn, K = y.shape
    methods = methods or [f"m{i}" for i in range(M)]
    return pd.DataFrame([(dataset, methods[m], protocol, f"seed{s}/scaffold_cv_r0_f{f}", float(y[m, s, f]), metric)
                         for m in range(M) for s in range(Sn) for f in range(K)], columns=S.COLUMNS)


def checkpoint_data(rng: np.random.Generator, M: int = 3, Sn: int = 4, K: int = 5, effect: float = 0.3,
                    tau: float = 0.7, sigma: float = 0.5) -> np.ndarray:
    """y[m, s, f] = effect·m + seed + fold + checkpoint (method × seed, sd tau) + noise (sd sigma)."""
    seed = rng.normal(0, 1, Sn)[None, :, None]
    fold = rng.normal(0, 1, K)[None, None, :]
    ckpt = rng.normal(0, tau, (M, Sn, 1))
    return effect * np.arange(M)[:, None, None] + seed + fold + ckpt + rng.normal(0, sigma, (M, Sn, K))


# --- the two-stage test is the mixed-model test ---------------------------------------------------


def test_two_stage_equals_the_anova_with_the_checkpoint_error_term_and_mixedlm():
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    y = checkpoint_data(np.random.default_rng(5))
    df = nested_frame(y)
    t = S.task_tests(df, "bbbp", "linear")
    assert (t.n, t.n_units, t.splits_per_seed) == (4, 20, 5)
    # unit level: method fixed, seed, checkpoint (method:seed) and split; F for method over the
    # checkpoint mean square (Montgomery §13.4), not over the residual
    long = df.assign(seed=df["unit"].map(D.unit_seed), split=df["unit"].map(D.unit_split))
    tab = anova_lm(smf.ols("test ~ C(method) * C(seed) + C(split)", data=long).fit())
    ms_m, ms_c = tab.loc["C(method)", "mean_sq"], tab.loc["C(method):C(seed)", "mean_sq"]
    df_m, df_c = tab.loc["C(method)", "df"], tab.loc["C(method):C(seed)", "df"]
    F = ms_m / ms_c
    assert (t.anova["df_num"], t.anova["df_den"]) == (df_m, df_c) == (2, 6)
    assert t.anova["F"] == pytest.approx(F, rel=1e-10)
    assert t.anova["p"] == pytest.approx(sps.f.sf(F, df_m, df_c), rel=1e-10)
    # the fold-unit F (residual error term) is another, wrong, test
    assert ms_m / tab.loc["Residual", "mean_sq"] > 3 * F
    # the Tukey interval's error term is the checkpoint mean square over the K folds
    d, lo, hi, _ = t.tukey[("m2", "m0")]
    q = sps.studentized_range.ppf(0.95, 3, df_c)
    assert (hi - lo) / 2 == pytest.approx(q * math.sqrt(ms_c / 5 / 4), rel=1e-6)
    # MixedLM (REML; seed random intercept, checkpoint variance component): same estimates, same
    # standard errors, and its Wald statistic for the method terms is 2 F
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("test ~ C(method) + C(split)", long, groups="seed", re_formula="1",
                          vc_formula={"ckpt": "0 + C(method)"}).fit(reml=True)
    names = ["C(method)[T.m1]", "C(method)[T.m2]"]
    b = fit.fe_params[names].to_numpy()
    V = fit.cov_params().loc[names, names].to_numpy()
    assert b == pytest.approx([t.compare("m1", "m0")["delta"], t.compare("m2", "m0")["delta"]], abs=1e-6)
    assert math.sqrt(V[0, 0]) == pytest.approx(math.sqrt(2 * ms_c / 5 / 4), rel=1e-3)
    assert float(b @ np.linalg.solve(V, b)) / 2 == pytest.approx(F, rel=1e-3)


def test_fixed_split_tasks_come_out_unchanged():
    """One split per seed: the seed means are the units, so every test is the unit-level one."""
    rng = np.random.default_rng(2)
    units = [f"seed{s}/fixed" for s in range(6)]
    scores = {m: list(0.7 + 0.02 * i + rng.normal(0, 0.01, 6)) for i, m in enumerate(("random", "none", "sma"))}
    df = pd.DataFrame([("higgs", m, "linear", u, v, "accuracy") for m, vals in scores.items()
                       for u, v in zip(units, vals)], columns=S.COLUMNS)
    t = S.task_tests(df, "higgs", "linear")
    wide = S.paired_units(df, "higgs", "linear", ["random", "none", "sma"])
    assert t.n == t.n_units == 6 and not t.repeated and t.fold_tukey is None
    assert t.seed_scores.to_numpy() == pytest.approx(wide.to_numpy())
    unit_level = S.rm_tukey(wide)
    for pair, v in unit_level.items():
        assert t.tukey[pair] == pytest.approx(v)
    assert t.anova == pytest.approx(S.rm_anova(wide))
    comp = S.compare_methods(df, references=["random"], tests={("higgs", "linear"): t})
    assert set(comp["unit"]) == {D.SEED_UNIT} and (comp["n"] == 6).all()     # no fold rows to add


# --- false positives and power -------------------------------------------------------------------


def _t_reject(d: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Two-sided one-sample t on the last axis of d (paired differences): reject?"""
    n = d.shape[-1]
    t = d.mean(-1) / (d.std(-1, ddof=1) / math.sqrt(n))
    return np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1)


def _simulate(rng: np.random.Generator, R: int, Sn: int, K: int, delta: float, tau: float, sigma: float
              ) -> np.ndarray:
    """y[r, method, seed, split] for methods (a, b): b − a = delta; a checkpoint effect (sd tau) per
    (method, seed), shared by its K folds; fold difficulty shared by everything; noise sd sigma."""
    fold = rng.normal(0, 1, (R, 1, 1, K))
    ckpt = rng.normal(0, tau, (R, 2, Sn, 1))
    y = fold + ckpt + rng.normal(0, sigma, (R, 2, Sn, K))
    y[:, 1] += delta
    return y


def _check_against_the_report(y: np.ndarray, seed_reject: np.ndarray, fold_reject: np.ndarray) -> None:
    """The vectorized tests are the report's: on a few replicates, task_tests gives the same decisions."""
    for r in range(8):
        t = S.task_tests(nested_frame(y[r], methods=["a", "b"]), "bbbp", "linear")
        assert t.tukey[("b", "a")][3] == bool(seed_reject[r])
        assert t.fold_tukey[("b", "a")][3] == bool(fold_reject[r])
        assert (t.compare("b", "a")["verdict"] in (S.BETTER, S.WORSE)) == bool(seed_reject[r])


def test_simulation_fold_units_inflate_false_positives_seed_units_do_not():
    R, Sn, K, alpha = 2000, 3, 10, 0.05
    y = _simulate(np.random.default_rng(20), R, Sn, K, delta=0.0, tau=1.0, sigma=1.0)
    d = y[:, 1] - y[:, 0]                                            # [R, seeds, splits]
    seed_rej = _t_reject(d.mean(-1))                                 # the design-aware test
    fold_rej = _t_reject(d.reshape(R, Sn * K))                       # every (seed, split) a unit
    _check_against_the_report(y, seed_rej, fold_rej)
    mc = 3 * math.sqrt(alpha * (1 - alpha) / R)
    assert seed_rej.mean() <= alpha + mc
    assert fold_rej.mean() > 4 * alpha                               # design effect 1 + 9 × 0.5 = 5.5


def test_simulation_power_matches_the_power_calculation():
    R, Sn, K, tau, sigma = 2000, 5, 5, 1.0, 1.0
    comp = D.Components(Sn, K, math.nan, math.nan, math.nan, var_seed=2 * tau ** 2, var_split=0.0,
                        var_residual=2 * sigma ** 2)
    sd = math.sqrt(comp.var_seed_mean)                               # sqrt(2τ² + 2σ²/K)
    assert sd == pytest.approx(math.sqrt(2.4))
    delta = D.min_detectable(sd, Sn, power=0.6)
    predicted = D.power_at(delta, sd, Sn)
    assert predicted == pytest.approx(0.6, abs=1e-6)
    y = _simulate(np.random.default_rng(21), R, Sn, K, delta=delta, tau=tau, sigma=sigma)
    d = y[:, 1] - y[:, 0]
    seed_rej = _t_reject(d.mean(-1))
    _check_against_the_report(y, seed_rej, _t_reject(d.reshape(R, Sn * K)))
    assert seed_rej.mean() == pytest.approx(predicted, abs=3 * math.sqrt(predicted * (1 - predicted) / R))


# --- variance components and power against known values -----------------------------------------

# Two-way layout without replication, 3 seeds x 4 splits (Montgomery §13.3, by hand):
# grand mean 8/3; seed means 2, 4, 2; split means 2, 4, 2, 8/3.
# SS_seed = 4 × [(2 − 8/3)² + (4 − 8/3)² + (2 − 8/3)²] = 32/3, df 2 -> MS 16/3
# SS_split = 3 × [(−2/3)² + (4/3)² + (−2/3)² + 0²] = 8, df 3 -> MS 8/3
# SS_res = Σ (y − seed mean − split mean + grand mean)² = 2 (SS_total = 62/3), df 6 -> MS 1/3
# var_seed = (16/3 − 1/3) / 4 = 5/4; var_split = (8/3 − 1/3) / 3 = 7/9; var_res = 1/3
GRID = pd.DataFrame([[1, 3, 2, 2], [4, 5, 3, 4], [1, 4, 1, 2]], dtype=float,
                    index=["seed0", "seed1", "seed2"], columns=["f0", "f1", "f2", "f3"])


def test_variance_components_of_a_hand_computed_two_way_anova():
    c = D.variance_components(GRID)
    assert (c.n_seeds, c.n_splits) == (3, 4)
    assert (c.ms_seed, c.ms_split, c.ms_residual) == pytest.approx((16 / 3, 8 / 3, 1 / 3))
    assert (c.var_seed, c.var_split, c.var_residual) == pytest.approx((5 / 4, 7 / 9, 1 / 3))
    total = 5 / 4 + 7 / 9 + 1 / 3                                    # 85/36
    assert c.share("seed") == pytest.approx(9 / 17) and c.share("split") == pytest.approx((7 / 9) / total)
    # a seed mean's variance: 5/4 + (1/3)/4 = 4/3, which is MS_seed / K
    assert c.var_seed_mean == pytest.approx(4 / 3) == c.ms_seed / 4
    # V(S, K) = 5/12 + 7/36 + 1/36 = 23/36; V(3, 8) = 19/36; V(6, 4) = 15/36
    assert c.var_estimate(3, 4) == pytest.approx(23 / 36)
    assert c.se_ratio(splits_factor=2) == pytest.approx(math.sqrt(19 / 23))
    assert c.se_ratio(seeds_factor=2) == pytest.approx(math.sqrt(15 / 23))
    # design effect = (4·5/4 + 3·7/9 + 1/3) / (85/36) = 276/85
    assert c.design_effect == pytest.approx(276 / 85)


def test_variance_components_truncate_and_refuse_what_they_cannot_estimate():
    flat = pd.DataFrame(np.arange(12.0).reshape(3, 4) % 5, index=["a", "b", "c"])
    assert D.variance_components(flat).var_seed >= 0 and D.variance_components(flat).var_split >= 0
    with pytest.raises(ValueError, match="at least 2"):
        D.variance_components(GRID.iloc[:, :1])
    holed = GRID.copy()
    holed.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="missing units"):
        D.variance_components(holed)
    # ρ = seed share with no split part: design effect 1 + (K − 1) ρ
    c = D.Components(3, 10, 0, 0, 0, var_seed=0.44, var_split=0.0, var_residual=0.56)
    assert c.design_effect == pytest.approx(1 + 9 * 0.44)


def test_power_figures_match_statsmodels_and_the_noncentral_t():
    # one-sample / paired t, two-sided, α = 0.05, power 0.8 (G*Power and statsmodels' TTestPower):
    # d = 0.5 needs n = 33.37 -> 34, d = 0.8 needs 14.30 -> 15
    assert D.seeds_needed(0.5, 1.0) == 34 and D.seeds_needed(0.8, 1.0) == 15
    assert D.seeds_needed(0.05, 0.1) == 34                           # only Δ / sd matters
    # at the returned n the power is reached, one seed fewer it is not (noncentral t, scipy)
    def nct_power(d: float, n: int) -> float:
        crit = sps.t.ppf(0.975, n - 1)
        nc = d * math.sqrt(n)
        return float(sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc))
    assert nct_power(0.5, 34) >= 0.8 > nct_power(0.5, 33)
    assert D.power_at(0.5, 1.0, 34) == pytest.approx(nct_power(0.5, 34), abs=1e-6)
    # MDD with 3 seeds: effect size 3.264 sd (statsmodels solve_power(nobs=3)); its power is 0.8
    mdd = D.min_detectable(0.02, 3)
    assert mdd == pytest.approx(0.02 * 3.264043552819638, rel=1e-6)
    assert nct_power(mdd / 0.02, 3) == pytest.approx(0.8, abs=1e-6)
    assert D.min_detectable(0.02, 10) < D.min_detectable(0.02, 5) < mdd
    assert math.isnan(D.min_detectable(0.02, 1)) and D.seeds_needed(1e-6, 1.0) is None


def test_power_rows_use_the_components_and_fall_back_to_the_seed_means():
    y = checkpoint_data(np.random.default_rng(7), M=2)
    t = S.task_tests(nested_frame(y, methods=["random", "sma"]), "bbbp", "linear")
    row = D.power_row(("bbbp", "linear"), "roc_auc", t.scores, "sma", "random", 0.01)
    comp = D.variance_components(D.difference_grid(t.scores, "sma", "random"))
    assert row["sd_source"] == "variance components" and row["splits_per_seed"] == 5
    assert row["sd_seed_mean"] == pytest.approx(math.sqrt(comp.var_seed + comp.var_residual / 5))
    assert row["mdd_run_seeds"] == pytest.approx(D.min_detectable(row["sd_seed_mean"], 4))
    fixed = t.scores.groupby(t.scores.index.map(D.unit_seed)).first()
    fixed.index = [f"{s}/scaffold" for s in fixed.index]
    row = D.power_row(("bbbp", "linear"), "roc_auc", fixed, "sma", "random", 0.01)
    assert row["sd_source"] == "sd of the seed means"
    assert row["sd_seed_mean"] == pytest.approx(float(np.std(fixed["sma"] - fixed["random"], ddof=1)))


# --- the verdict's unit ---------------------------------------------------------------------------


def test_verdicts_rest_on_seeds_fold_rows_are_conditional_and_give_none():
    """A checkpoint effect that makes the fold-unit test call a difference the seeds do not support:
    the verdict, the statement and the bold follow the seeds; the fold row keeps the interval only."""
    rng = np.random.default_rng(3)
    Sn, K = 3, 10
    y = np.zeros((2, Sn, K)) + rng.normal(0, 1, K)                   # shared fold difficulty
    y += np.array([[0.0, 0.0, 0.0], [0.04, -0.01, 0.03]])[:, :, None]  # per-checkpoint offsets
    y += rng.normal(0, 0.002, y.shape)
    df = nested_frame(y, methods=["random", "sma"])
    t = S.task_tests(df, "bbbp", "linear")
    assert t.fold_tukey[("sma", "random")][3]                        # fold units: "significant"
    assert not t.tukey[("sma", "random")][3]                         # seeds: not
    comp = S.compare_methods(df, references=["random"], tests={("bbbp", "linear"): t})
    assert list(comp["unit"]) == [D.SEED_UNIT, D.FOLD_UNIT]
    seed_row, fold_row = comp.iloc[0], comp.iloc[1]
    assert seed_row["verdict"] == S.NO_DIFF and seed_row["n"] == 3 == seed_row["n_seeds"]
    assert seed_row["splits_per_seed"] == 10
    assert fold_row["verdict"] == "" and fold_row["n"] == 30 and bool(fold_row["tukey_reject"])
    assert (seed_row["verdict_low"], seed_row["verdict_high"]) == (seed_row["tukey_low"], seed_row["tukey_high"])
    assert seed_row["delta"] == pytest.approx(fold_row["delta"])     # balanced: the same Δ
    assert S.significantly_best(df, {("bbbp", "linear"): t}) == {("bbbp", "linear"): set()}
    text = S.task_statement(t, "sma", "random")
    assert text.startswith("no significant difference") and "n = 3 pretraining seeds, each the mean of its 10 " \
        "splits" in text and "n = 30" not in text


def test_seed_means_of_unbalanced_units():
    scores = pd.DataFrame({"a": [1.0, 2, 3, 5], "b": [0.0, 0, 1, 1]},
                          index=["seed0/f0", "seed0/f1", "seed1/f0", "seed2/f0"])
    m = D.seed_means(scores)
    assert list(m.index) == ["seed0", "seed1", "seed2"] and m["a"].tolist() == [1.5, 3, 5]
    assert m.attrs["splits_per_seed"] == {"seed0": 2, "seed1": 1, "seed2": 1} and not m.attrs["balanced"]
    assert D.splits_per_seed(scores) is None and D.unit_seed("x") == "x" and D.unit_split("x") == ""


def test_report_config_keys_have_defaults_and_are_checked():
    from pipeline_src.config import ConfigError, load_config, validate

    cfg = load_config("config/config.yaml")
    assert cfg["report"] == {"compare": [], "target_delta": D.TARGET_DELTA}
    for bad in ({"compare": [["a", "b", "c"]]}, {"target_delta": {"rmse": -1.0}}, {"target_delta": {"mae": 0.1}}):
        with pytest.raises(ConfigError, match=r"my\.yaml: report\.(compare|target_delta)"):
            validate({**cfg, "report": bad}, "config.schema.yaml", "my.yaml")
    ok = {**cfg, "report": {"compare": [["sma_r2", "sma"]], "target_delta": {"rmse": 0.1}}}
    validate(ok, "config.schema.yaml", "my.yaml")
    assert ok["report"]["target_delta"]["rmse"] == 0.1 and ok["report"]["target_delta"]["roc_auc"] == 0.01
