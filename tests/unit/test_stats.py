"""Paired significance tests: each routine against a case with a known answer, verdicts on
synthetic data, unit pairing, bolding, and the findings section. Here every unit is its own
pretraining seed (one split per seed, as on a fixed split), so seed means are the units; the
repeated-fold design is in test_stats_design.py."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_src.report import stats as S

# Student's sleep data (Cushny & Peebles 1905), R's `t.test(extra ~ group, data = sleep, paired = TRUE)`:
# differences group1 − group2 = −1.2, −2.4, −1.3, −1.3, 0.0, −1.0, −1.8, −0.8, −4.6, −1.4
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def frame(scores: dict[str, list[float]], dataset: str = "bbbp", metric: str = "roc_auc",
          protocol: str = "linear", units: list[str] | None = None) -> pd.DataFrame:
    """Tidy results: one row per (method, unit); ``scores[method][i]`` is unit i's score; by default
    unit i is pretraining seed i on the one fixed split."""
    n = len(next(iter(scores.values())))
    units = units or [f"seed{i:02d}/scaffold" for i in range(n)]
    return pd.DataFrame([(dataset, m, protocol, u, float(v), metric)
                         for m, vals in scores.items() for u, v in zip(units, vals)], columns=S.COLUMNS)


# --- paired t interval, Wilcoxon --------------------------------------------------------------


def test_paired_t_interval_matches_the_formula_and_r():
    p = S.paired_difference(np.array(SLEEP_1), np.array(SLEEP_2))
    # mean d = −1.58, sd(d) = 1.229995, se = 0.3889587, t(0.975, 9) = 2.262157:
    # −1.58 ± 2.262157 × 0.3889587 = −1.58 ± 0.879886 -> [−2.459886, −0.700114] (R prints −2.4598858 −0.7001142)
    assert p.n == 10
    assert p.delta == pytest.approx(-1.58)
    assert p.ci_low == pytest.approx(-1.58 - 2.262157 * 0.3889587, abs=1e-5)
    assert p.ci_high == pytest.approx(-1.58 + 2.262157 * 0.3889587, abs=1e-5)
    assert (p.ci_low, p.ci_high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)


def test_wilcoxon_matches_scipys_documented_example():
    # scipy.stats.wilcoxon docs: differences in height of cross- and self-fertilised plants,
    # two-sided: statistic 24, p = 0.041259765625 (exact distribution)
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)
    p = S.paired_difference(d + 100.0, np.full(len(d), 100.0))
    assert p.p_wilcoxon == pytest.approx(0.041259765625, abs=1e-12)
    assert p.wilcoxon_note == ""


def test_wilcoxon_is_honest_about_zero_differences_and_small_n():
    same = S.paired_difference(np.arange(8.0), np.arange(8.0))
    assert math.isnan(same.p_wilcoxon) and "all differences are zero" in same.wilcoxon_note
    assert same.delta == 0.0
    small = S.paired_difference(np.array([1.0, 2, 3, 4, 5]), np.zeros(5))
    assert math.isnan(small.p_wilcoxon) and "fewer than 6" in small.wilcoxon_note
    # zeros do not count: 7 units, 5 non-zero differences
    zeros = S.paired_difference(np.array([1.0, 2, 3, 4, 5, 0, 0]), np.zeros(7))
    assert math.isnan(zeros.p_wilcoxon) and zeros.wilcoxon_note.startswith("5 non-zero")
    one = S.paired_difference(np.array([1.0]), np.array([0.5]))
    assert one.n == 1 and math.isnan(one.ci_low) and one.delta == 0.5


# --- repeated-measures ANOVA and Tukey HSD ----------------------------------------------------

# 4 units × 3 methods. Method means 3, 5, 8 (grand mean 16/3); unit means 5, 5, 6, 16/3.
# SS_method = 4 × [(3 − 16/3)² + (5 − 16/3)² + (8 − 16/3)²] = 152/3, df 2 -> MS 76/3.
# residuals y − unit mean − method mean + grand mean: (1/3, 1/3, −2/3), (−2/3, −2/3, 4/3), (1/3, 1/3, −2/3), (0, 0, 0)
# SS_error = 4, df (4 − 1)(3 − 1) = 6 -> MS_error = 2/3; F = (76/3) / (2/3) = 38.
RM = pd.DataFrame({"a": [3.0, 2, 4, 3], "b": [5.0, 4, 6, 5], "c": [7.0, 9, 8, 8]},
                  index=pd.Index(["u1", "u2", "u3", "u4"], name="unit"))


def test_rm_anova_known_f():
    a = S.rm_anova(RM)
    assert a["F"] == pytest.approx(38.0)
    assert (a["df_num"], a["df_den"]) == (2, 6)
    # P(F(2, 6) > 38) = (1 + 2·38/6)^(−3) for numerator df 2: (1 + 76/6)^−3
    assert a["p"] == pytest.approx((1 + 2 * 38 / 6) ** -3, rel=1e-6)


def test_rm_anova_with_two_methods_is_the_squared_paired_t():
    scores = pd.DataFrame({"g1": SLEEP_1, "g2": SLEEP_2}, index=[f"s{i}" for i in range(10)])
    assert S.rm_anova(scores)["F"] == pytest.approx(4.062127683 ** 2, rel=1e-8)   # R: t = −4.0621, df 9


def test_rm_tukey_uses_the_repeated_measures_error_term():
    t = S.rm_tukey(RM)
    # studentized range table: q(0.05; 3 means, 6 df) = 4.34; half-width q × sqrt(MS_error / n) = q × sqrt((2/3) / 4)
    q = 4.339195
    half = q * math.sqrt((2 / 3) / 4)
    for (m, r), diff in {("b", "a"): 2.0, ("c", "b"): 3.0, ("c", "a"): 5.0}.items():
        d, lo, hi, rej = t[(m, r)]
        assert d == pytest.approx(diff)
        assert (lo, hi) == pytest.approx((diff - half, diff + half), abs=1e-4)
        assert rej                                           # 2 > 1.77
        assert t[(r, m)][:3] == pytest.approx((-diff, -diff - half, -diff + half), abs=1e-4)


def test_rm_tukey_with_two_methods_is_the_paired_t_interval():
    scores = pd.DataFrame({"g1": SLEEP_1, "g2": SLEEP_2}, index=[f"s{i}" for i in range(10)])
    d, lo, hi, rej = S.rm_tukey(scores)[("g1", "g2")]
    assert d == pytest.approx(-1.58)
    assert (lo, hi) == pytest.approx((-2.4598858, -0.7001142), abs=1e-5)   # q(2, df)/√2 = t(0.975, df)
    assert rej


# --- Friedman across tasks --------------------------------------------------------------------

# scipy.stats.friedmanchisquare docs: pulse rates of 7 people before, immediately after and 5 minutes
# after exercise; statistic 10.571428571428571, p = 0.005063414171757498. Rank sums 10, 21, 11:
# 12 / (7·3·4) × (10² + 21² + 11²) − 3·7·4 = 662/7 − 84 = 10.5714.
BEFORE = [72, 96, 88, 92, 74, 76, 82]
AFTER = [120, 120, 132, 120, 101, 96, 112]
FIVE = [76, 95, 104, 96, 84, 72, 76]


def _tasks_frame(rmse_tasks: int = 0) -> pd.DataFrame:
    rows = []
    for i, vals in enumerate(zip(BEFORE, AFTER, FIVE)):
        rmse = i < rmse_tasks
        metric = "rmse" if rmse else "accuracy"
        for m, v in zip(("before", "after", "five"), vals):
            rows.append((f"task{i}", m, "linear", "seed0/fixed", -v if rmse else v, metric))
    return pd.DataFrame(rows, columns=S.COLUMNS)


@pytest.mark.parametrize("rmse_tasks", [0, 3])
def test_friedman_known_statistic_ranks_and_holm_posthoc(rmse_tasks: int):
    res = S.across_tasks(_tasks_frame(rmse_tasks), "linear")
    assert res.ran and res.tasks == [f"task{i}" for i in range(7)]
    assert res.statistic == pytest.approx(10.571428571428571)
    assert res.p == pytest.approx(0.005063414171757498)
    # ranks, 1 = best (higher accuracy; lower RMSE — the negated values keep the order)
    assert res.mean_ranks.to_dict() == pytest.approx({"before": 18 / 7, "after": 1.0, "five": 17 / 7})
    # post-hoc z = |R_i − R_j| / sqrt(k(k + 1) / (6N)), two-sided normal p, Holm over the 3 pairs
    from scipy.stats import norm

    se = math.sqrt(3 * 4 / (6 * 7))
    raw = {("after", "before"): 2 * norm.sf((11 / 7) / se), ("after", "five"): 2 * norm.sf((10 / 7) / se),
           ("before", "five"): 2 * norm.sf((1 / 7) / se)}
    holm = {("after", "before"): 3 * raw[("after", "before")], ("after", "five"): 2 * raw[("after", "five")],
            ("before", "five"): raw[("before", "five")]}
    for (a, b), p in holm.items():
        assert res.posthoc.loc[a, b] == pytest.approx(p, rel=1e-6)
    assert res.compare("after", "before") == (S.BETTER, pytest.approx(holm[("after", "before")]))
    assert res.compare("five", "after")[0] == S.WORSE
    assert res.compare("five", "before")[0] == S.NO_DIFF


def test_friedman_not_run_with_fewer_than_three_tasks_or_methods(tmp_path: Path):
    two_tasks = _tasks_frame()
    two_tasks = two_tasks[two_tasks["dataset"].isin(["task0", "task1"])]
    res = S.across_tasks(two_tasks, "linear")
    assert not res.ran and "needs at least 3" in res.note and "2 task(s)" in res.note
    assert S.critical_difference_png(res, tmp_path / "cd.png") is None
    two_methods = _tasks_frame()
    two_methods = two_methods[two_methods["method"] != "five"]
    res = S.across_tasks(two_methods, "linear")
    assert not res.ran and "2 method(s)" in res.note
    assert res.compare("after", "before") == (S.NOT_TESTED, pytest.approx(math.nan, nan_ok=True))


def test_friedman_leaves_out_methods_missing_a_task_and_draws_the_diagram(tmp_path: Path):
    df = _tasks_frame()
    extra = df[(df["method"] == "five") & (df["dataset"] != "task3")].assign(method="partial")
    res = S.across_tasks(pd.concat([df, extra], ignore_index=True), "linear")
    assert res.methods == ["before", "after", "five"] and res.left_out == {"partial": ["task3"]}
    png = S.critical_difference_png(res, tmp_path / "figs" / "cd_linear.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- pairing ----------------------------------------------------------------------------------


def test_paired_units_keeps_only_units_every_method_scored():
    df = frame({"random": [0.70, 0.71, 0.72, 0.73], "sma": [0.75, 0.76, 0.77, 0.78]},
               units=["seed0/f0", "seed0/f1", "seed1/f0", "seed1/f1"])
    df = df[~((df["method"] == "sma") & (df["unit"] == "seed0/f1"))]              # sma lacks one unit
    df = pd.concat([df, frame({"random": [0.5]}, units=["seed2/f0"])])           # only random has this one
    w = S.paired_units(df, "bbbp", "linear", ["sma", "random"])
    assert list(w.columns) == ["sma", "random"]
    assert list(w.index) == ["seed0/f0", "seed1/f0", "seed1/f1"]
    assert w.attrs["n_dropped"] == 2
    assert w.attrs["n_units_per_method"] == {"sma": 3, "random": 5}
    assert w.loc["seed1/f0"].tolist() == [0.77, 0.72]                            # same unit, same row


def test_non_finite_scores_are_unscored_units():
    df = frame({"random": [0.7, 0.7, 0.7], "sma": [0.8, float("nan"), 0.8]}, units=["a", "b", "c"])
    t = S.task_tests(df, "bbbp", "linear")
    assert t.n == 2 and t.n_dropped == 1


def test_bad_input_is_named():
    df = frame({"random": [0.7, 0.7], "sma": [0.8, 0.8]}, units=["a", "b"])
    with pytest.raises(ValueError, match="lacks column.*unit"):
        S.paired_units(df.drop(columns="unit"), "bbbp", "linear", ["sma"])
    with pytest.raises(ValueError, match="several results for dataset 'bbbp'.*unit 'a', method 'sma'"):
        S.paired_units(pd.concat([df, df.iloc[[2]]]), "bbbp", "linear", ["sma", "random"])
    with pytest.raises(ValueError, match="unknown metric 'mae'"):
        S.check_results(df.assign(metric="mae"))
    mixed = df.copy()
    mixed.loc[0, "metric"] = "rmse"
    with pytest.raises(ValueError, match="dataset 'bbbp' has results in several metrics"):
        S.check_results(mixed)
    with pytest.raises(ValueError, match="no results for dataset 'esol', protocol 'linear'"):
        S.task_tests(df, "esol", "linear")


# --- verdicts, comparisons, bolding -----------------------------------------------------------


def _synthetic(metric: str, seed: int = 3, n: int = 15, shift_sd: float = 5.0) -> pd.DataFrame:
    """``random`` and ``same`` identical in distribution; ``good`` better by ``shift_sd`` noise sds;
    a unit effect (fold difficulty) 10× the noise, shared by every method."""
    rng = np.random.default_rng(seed)
    sd = 0.01
    unit = rng.normal(0.0, 10 * sd, n)
    better = 1.0 if metric != "rmse" else -1.0
    scores = {"random": 0.7 + unit + rng.normal(0, sd, n), "same": 0.7 + unit + rng.normal(0, sd, n),
              "good": 0.7 + unit + better * shift_sd * sd + rng.normal(0, sd, n)}
    return frame({k: list(v) for k, v in scores.items()}, metric=metric)


@pytest.mark.parametrize("metric", ["roc_auc", "rmse"])
def test_verdicts_on_synthetic_data(metric: str):
    t = S.task_tests(_synthetic(metric), "bbbp", "linear")
    assert t.n == 15 and t.tukey is not None and t.anova is not None and t.anova["p"] < 1e-6
    good = t.compare("good", "random")
    assert good["verdict"] == S.BETTER and good["verdict_test"] == S.TUKEY_TEST and good["n"] == 15
    assert (good["delta"] > 0) == (metric != "rmse")
    assert good["tukey_low"] <= good["delta"] <= good["tukey_high"]
    assert good["tukey_high"] - good["tukey_low"] > good["ci_high"] - good["ci_low"]   # simultaneous is wider
    assert t.compare("random", "good")["verdict"] == S.WORSE
    same = t.compare("same", "random")
    assert same["verdict"] == S.NO_DIFF and same["tukey_low"] < 0 < same["tukey_high"]


def test_verdict_falls_back_to_the_paired_interval_then_to_not_tested():
    # every unit shows the same differences: no residual variance for Tukey; paired t decides
    df = frame({"random": [0.70, 0.72, 0.74], "sma": [0.75, 0.77, 0.79], "r2mae": [0.69, 0.71, 0.73]})
    t = S.task_tests(df, "bbbp", "linear")
    assert t.tukey is None and "no residual variance" in t.tukey_note
    row = t.compare("sma", "random")
    assert row["verdict_test"] == S.PAIRED_T_TEST and row["verdict"] == S.BETTER
    one = S.task_tests(frame({"random": [0.7], "sma": [0.8]}), "bbbp", "linear")
    assert one.tukey is None and one.anova is None and "n = 1" in one.tukey_note
    assert one.compare("sma", "random")["verdict"] == S.NOT_TESTED
    assert S.task_statement(one, "sma", "random").startswith("not tested (Δ = +0.100, n = 1")


def test_compare_methods_is_tidy_and_csv_able():
    df = pd.concat([_synthetic("roc_auc"), _synthetic("rmse").assign(dataset="esol")], ignore_index=True)
    out = S.compare_methods(df, references=["random"])
    assert list(out.columns) == S.COMPARISON_COLUMNS
    assert set(map(tuple, out[["dataset", "method", "reference"]].to_numpy())) == {
        ("bbbp", "same", "random"), ("bbbp", "good", "random"), ("esol", "same", "random"), ("esol", "good", "random")}
    assert out.set_index(["dataset", "method"]).loc[("esol", "good"), "delta"] < 0
    assert len(S.compare_methods(df, references=None)) == 2 * 3 * 2       # every ordered pair per task
    assert "tukey_reject" in out.to_csv(index=False).splitlines()[0]


def test_significantly_best():
    good = _synthetic("rmse")                                            # "good" has the lowest RMSE
    assert S.significantly_best(good) == {("bbbp", "linear"): {"good"}}
    # a second method indistinguishable from the best is bolded with it
    twin = good[good["method"] == "good"].assign(method="twin")
    twin["test"] += np.random.default_rng(0).normal(0, 0.001, len(twin))
    assert S.significantly_best(pd.concat([good, twin]))[("bbbp", "linear")] == {"good", "twin"}
    # nothing separates the methods: no bold at all
    flat = _synthetic("rmse", shift_sd=0.0)
    assert S.significantly_best(flat) == {("bbbp", "linear"): set()}


# --- findings -----------------------------------------------------------------------------------


NAMES = {"random": "MAE (random)", "sma": "SMA", "r2mae": "R2MAE", "metamae": "MetaMAE", "mine": "My masking"}


def _findings_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    parts = []
    for ds, metric in (("bbbp", "roc_auc"), ("esol", "rmse"), ("higgs", "accuracy")):
        sign = -1.0 if metric == "rmse" else 1.0
        unit = rng.normal(0, 0.1, 15)
        scores = {m: list(0.7 + unit + sign * shift + rng.normal(0, 0.01, 15))
                  for m, shift in (("none", -0.05), ("random", 0.0), ("sma", 0.05), ("r2mae", 0.0), ("mine", 0.05))}
        parts.append(frame(scores, dataset=ds, metric=metric))
    return pd.concat(parts, ignore_index=True)


def test_findings_markdown(tmp_path: Path):
    df = _findings_frame()
    out_md = tmp_path / "reports" / "all.md"
    lines = S.findings_markdown(df, figures_dir=tmp_path / "reports" / "figures", out_md=out_md,
                                metric_units={"esol": "log mol/L"}, names=NAMES,
                                order=["none", "random", "sma", "r2mae", "metamae", "mine"],
                                compare=[["mine", "sma"], ["sma", "random"]], tables_dir=tmp_path / "reports" / "tables")
    text = "\n".join(lines)
    assert lines[0] == "## Findings"
    # the headline tables come before the per-task prose
    assert text.index("### Headline") < text.index("### Protocol `linear`") < text.index("### Where the variance")
    sma = text.split("- SMA vs MAE (random):")[1].split("\n- ")[0]
    assert "  - bbbp: better (Δ = +0.0" in sma and "n = 15 pretraining seeds (one split each); Tukey HSD over 5 " \
        "methods on the seed means" in sma
    assert "  - esol: better (Δ = −0.0" in sma and "log mol/L" in sma
    assert "overall: " in sma and "Friedman χ²(4)" in sma and "N = 3 tasks" in sma
    # every method against MAE and against no pretraining, by the names given; a method of the
    # config without results is named as skipped
    for m in ("SMA", "R2MAE", "My masking", "no pretraining"):
        assert f"- {m} vs MAE (random):" in text
    for m in ("SMA", "R2MAE", "My masking", "MAE (random)"):
        assert f"- {m} vs no pretraining:" in text
    assert "- MetaMAE vs MAE (random): skipped, no results for MetaMAE" in text
    # the configured pair, once; a pair already asked is not repeated
    assert "**Configured comparisons (report.compare)**" in text and "- My masking vs SMA:" in text
    assert text.count("- SMA vs MAE (random):") == 1
    # every verdict line names its n, its unit and its test
    for line in lines:
        if line.startswith("  - ") and not line.startswith("  - overall") and "skipped" not in line:
            assert "n = 15 pretraining seeds" in line and "Tukey HSD" in line and "Wilcoxon signed-rank" in line
    assert "![Critical-difference diagram, protocol linear](figures/cd_linear.png)" in text
    assert (tmp_path / "reports" / "figures" / "cd_linear.png").is_file()
    for name in ("headline.csv", "variance_components.csv", "power.csv"):
        assert (tmp_path / "reports" / "tables" / name).is_file() and f"({'tables/' + name})" in text


def test_headline_table_every_method_and_both_references():
    df = _findings_frame()
    tests = S.all_task_tests(df)
    h = S.headline_frame(tests, "random", "linear", order=["none", "random", "sma", "r2mae", "mine"])
    assert list(dict.fromkeys(h["method"])) == ["none", "sma", "r2mae", "mine"]
    assert set(h["dataset"]) == {"bbbp", "esol", "higgs"}
    row = h[(h["method"] == "sma") & (h["dataset"] == "esol")].iloc[0]
    assert row["verdict"] == S.BETTER and row["cell"].endswith(" ▲") and row["delta"] < 0
    md = "\n".join(S.headline_markdown(h, tests, NAMES))
    assert "| My masking |" in md and "esol (RMSE ↓)" in md and "▼" in md          # none is worse than MAE
    assert md.splitlines()[0].startswith("| method | bbbp (ROC-AUC ↑)")
    none = S.headline_frame(tests, "none", "linear")
    assert set(none["method"]) == {"random", "sma", "r2mae", "mine"}
    assert (none["verdict"] == S.BETTER).all()


def test_display_names_come_from_the_mapping_never_from_built_in_names():
    from pipeline_src.evaluate.baselines import BASELINES

    assert not hasattr(S, "QUESTIONS") and not hasattr(S, "QUESTION_METHODS") and not hasattr(S, "DISPLAY_NAMES")
    for m in ("none", *BASELINES):                      # rows with no checkpoint have fixed labels
        assert m in S.FIXED_LABELS
    assert S.display_name("rf_morgan") == "RF on Morgan FP" and S.display_name("other") == "other"
    assert S.display_name("sma") == "sma" and S.display_name("sma", {"sma": "SMA"}) == "SMA"
    assert S.display_name("random") == "MAE (random)"          # the reference, without meta.json
    assert S.unique_labels(["a", "b"], {"a": "X", "b": "X"}) == {"a": "X (a)", "b": "X (b)"}
    # the report modules name no built-in pretraining method
    root = Path(S.__file__).parent
    for f in ("stats.py", "design.py", "tables.py", "build.py"):
        src = (root / f).read_text()
        for m in ("sma", "r2mae", "metamae", "sma_r2", "span"):
            assert f'"{m}"' not in src and f"'{m}'" not in src, (f, m)
