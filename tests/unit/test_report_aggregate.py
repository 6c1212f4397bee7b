"""Aggregation of result JSONs: cells, mean / std / n over seeds and seeded splits."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline_src.report.aggregate import (ResultKey, aggregate, load_results, parse_result_path, restrict_to,
                                           split_kind)
from test_report_support import write_result


def test_split_kind_strips_only_the_seed_suffix():
    assert split_kind("scaffold_balanced_seed2") == "scaffold_balanced"
    assert split_kind("random_seed10") == "random"
    assert split_kind("scaffold") == "scaffold"
    assert split_kind("fixed") == "fixed"


def test_parse_result_path_and_log_path():
    k = parse_result_path("data/results/bbbp/sma/linear/scaffold_balanced_seed1/seed1.json")
    assert k == ResultKey("bbbp", "sma", "linear", "scaffold_balanced_seed1", 1)
    assert k.cell == ("bbbp", "sma", "linear", "scaffold_balanced")
    assert k.log_path() == "data/logs/evaluate/bbbp/sma/linear.log"  # one linear job per (dataset, method)
    f = parse_result_path("data/results/bbbp/sma/finetune/scaffold/seed2.json")
    assert f.log_path() == "data/logs/evaluate/bbbp/sma/finetune.log"  # one finetune job per (dataset, method)
    with pytest.raises(ValueError):
        parse_result_path("data/results/bbbp/sma/linear/scaffold/result.json")


def test_mean_std_n_over_seeded_splits_and_seeds(tmp_path: Path):
    root = tmp_path / "results"
    for k, v in enumerate([0.70, 0.80, 0.90]):                       # seeded splits -> one cell
        write_result(root, "bbbp", "sma", "linear", f"scaffold_balanced_seed{k}", k, v, "roc_auc")
    for k, v in enumerate([1.0, 2.0, 4.0]):                           # finetune seeds on a fixed split
        write_result(root, "esol", "random", "finetune", "scaffold", k, v, "rmse")
    write_result(root, "esol", "random", "linear", "scaffold", 0, 1.5, "rmse")  # a single run
    (root / "bbbp" / "sma" / "linear" / "scaffold_balanced_seed0" / "seed9.json").write_text("{not json")

    res = load_results(root)
    assert len(res) == 7
    agg = aggregate(res).set_index(["dataset", "method", "protocol", "split_kind"])
    a = agg.loc[("bbbp", "sma", "linear", "scaffold_balanced")]
    assert a["n"] == 3 and a["mean"] == pytest.approx(0.8) and a["std"] == pytest.approx(0.1)
    assert a["metric"] == "roc_auc"
    b = agg.loc[("esol", "random", "finetune", "scaffold")]
    assert b["n"] == 3 and b["mean"] == pytest.approx(7 / 3)
    assert b["std"] == pytest.approx(float(np.std([1.0, 2.0, 4.0], ddof=1)))
    c = agg.loc[("esol", "random", "linear", "scaffold")]
    assert c["n"] == 1 and c["mean"] == 1.5 and math.isnan(c["std"])
    assert len(agg) == 3


def test_restrict_to_keeps_only_planned_runs(tmp_path: Path):
    root = tmp_path / "results"
    write_result(root, "bbbp", "sma", "linear", "scaffold", 0, 0.7, "roc_auc")
    write_result(root, "bbbp", "old_method", "linear", "scaffold", 0, 0.9, "roc_auc")
    res = restrict_to(load_results(root), [ResultKey("bbbp", "sma", "linear", "scaffold", 0)])
    assert res["method"].tolist() == ["sma"]


def test_empty_results(tmp_path: Path):
    res = load_results(tmp_path / "nothing")
    assert res.empty and aggregate(res).empty
