"""Report tables: bold by direction, gaps never empty or NaN, reported rows kept apart, CSV copies."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from pipeline_src.report.aggregate import ResultKey, aggregate, load_results, parse_result_path
from pipeline_src.report.tables import CellSource, build_table, to_csv, to_markdown, write_csv
from test_report_support import write_result

METRICS = {"bbbp": "roc_auc", "esol": "rmse"}
REF = {"title": "t", "source": "Paper X, Table 2", "protocol": "finetune", "split": "scaffold",
       "datasets": ["bbbp", "esol"],
       "rows": [{"label": "SMA-1.6M", "method": "sma", "values": {"bbbp": 0.99, "esol": 0.01}},
                {"label": "Other", "method": None, "domain_agnostic": False, "values": {"bbbp": 0.5}}]}


def _source(tmp_path: Path, expected: list[str] | None, applicable=lambda ds, m, p: True) -> CellSource:
    res = load_results(tmp_path / "results")
    present = {ResultKey(r.dataset, r.method, r.protocol, r.split, int(r.seed))
               for r in res[["dataset", "method", "protocol", "split", "seed"]].itertuples(index=False)}
    keys = None if expected is None else [parse_result_path(p) for p in expected]
    return CellSource(aggregate(res), present, keys, str(tmp_path / "logs"), {"bbbp", "esol"}, applicable)


def _cells(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows[1:]]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    r = tmp_path / "results"
    for k, v in enumerate([0.80, 0.82]):
        write_result(r, "bbbp", "sma", "linear", "scaffold", k, v, "roc_auc")
    write_result(r, "bbbp", "random", "linear", "scaffold", 0, 0.70, "roc_auc")
    write_result(r, "esol", "sma", "linear", "scaffold", 0, 1.40, "rmse")
    write_result(r, "esol", "random", "linear", "scaffold", 0, 1.10, "rmse")
    write_result(r, "esol", "rf_morgan", "classical", "scaffold", 0, 1.90, "rmse")
    return r


def test_bold_marks_only_the_significantly_best_of_ours(tmp_path: Path, results: Path):
    """Bold comes from the statistics ((dataset, protocol) -> significantly best methods), never
    from the best mean alone, and never on reported rows."""
    src = _source(tmp_path, None)
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma"], {}, REF)
    assert not any(c.bold for r in t.rows for c in r.cells.values())   # no statistics: no bold
    best = {("bbbp", "linear"): {"sma"}, ("esol", "linear"): {"random"}}
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma"], {}, REF, best=best)
    ours = {(r.method, r.protocol): r for r in t.rows if r.source == "ours"}
    assert ours[("sma", "linear")].cells["bbbp"].bold
    assert not ours[("random", "linear")].cells["bbbp"].bold
    assert ours[("random", "linear")].cells["esol"].bold
    assert not ours[("sma", "linear")].cells["esol"].bold
    assert not any(c.bold for r in t.rows if r.source == "reported" for c in r.cells.values())
    md = to_markdown(t)
    assert "**0.810 ± 0.014 (n=2)**" in md and "**1.100 (n=1)**" in md


def test_reported_rows_come_from_the_yaml_and_stay_out_of_our_numbers(tmp_path: Path, results: Path):
    src = _source(tmp_path, None)
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma"], {}, REF)
    rep = [r for r in t.rows if r.source == "reported"]
    assert [r.label for r in rep] == ["SMA-1.6M", "Other"]
    assert rep[0].cells["bbbp"].mean == 0.99 and rep[0].cells["bbbp"].text == "0.990"
    assert rep[1].cells["esol"].text == "not reported" and rep[1].note == "not domain-agnostic"
    ours_sma = next(r for r in t.rows if r.source == "ours" and r.method == "sma")
    assert ours_sma.cells["bbbp"].mean == pytest.approx(0.81) and ours_sma.cells["bbbp"].n == 2
    assert "Paper X, Table 2" in to_markdown(t)
    # the reported rows come after ours
    kinds = [r.source for r in t.rows]
    assert kinds == sorted(kinds, key=lambda s: s == "reported")


def test_gaps_say_failed_or_not_run_never_nan_or_empty(tmp_path: Path, results: Path):
    expected = [
        "data/results/bbbp/sma/linear/scaffold/seed0.json",          # present
        "data/results/bbbp/sma/linear/scaffold/seed1.json",          # present
        "data/results/bbbp/sma/linear/scaffold/seed2.json",          # missing, log -> partial cell
        "data/results/esol/span/linear/scaffold/seed0.json",         # missing, log -> failed
        "data/results/bbbp/span/linear/scaffold/seed0.json",         # missing, no log -> not run
        "data/results/esol/rf_morgan/classical/scaffold/seed0.json",
    ]
    for p in (expected[2], expected[3]):
        log = Path(parse_result_path(p).log_path(tmp_path / "logs"))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("Traceback ...\n")
    src = _source(tmp_path, expected, applicable=lambda ds, m, p: not (p == "classical" and ds == "bbbp"))
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma", "span"],
                    {"span": "not domain-agnostic"}, REF, None, [("none", "linear")])
    ours = {(r.method, r.protocol): r for r in t.rows if r.source == "ours"}
    span = ours[("span", "linear")]
    assert span.cells["esol"].text.startswith("failed (log: ") and "esol/span/linear.log" in span.cells["esol"].text
    assert span.cells["bbbp"].text == "not run" and span.note == "not domain-agnostic"
    sma = ours[("sma", "linear")].cells["bbbp"]
    assert sma.status == "partial" and "2 of 3" in sma.text and "failed (log:" in sma.text
    assert ours[("none", "linear")].cells["bbbp"].text == "not run"  # a default row with no result
    rf = ours[("rf_morgan", "classical")]
    assert rf.cells["bbbp"].text == "n/a" and rf.note == "domain-specific baseline"
    assert ours[("random", "linear")].cells["esol"].text == "1.100 (n=1)"  # present though not planned
    for row in _cells(to_markdown(t)):
        assert all(c and c.lower() != "nan" and "nan " not in c.lower() for c in row), row


def test_csv_has_numbers_std_and_n(tmp_path: Path, results: Path):
    src = _source(tmp_path, None)
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma"], {}, REF)
    path = write_csv(t, tmp_path / "tables")
    assert path.name == "mn.csv" and path.read_text() == to_csv(t)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    sma = next(r for r in rows if r["method"] == "sma" and r["source"] == "ours")
    assert float(sma["bbbp"]) == pytest.approx(0.81) and int(sma["bbbp_n"]) == 2
    assert float(sma["bbbp_std"]) == pytest.approx(0.0141421356, rel=1e-6) and sma["bbbp_status"] == "ok"
    rep = next(r for r in rows if r["label"] == "Other")
    assert rep["source"] == "reported" and float(rep["bbbp"]) == 0.5 and rep["esol"] == ""
    assert rep["esol_status"] == "not reported"


def test_row_labels_come_from_the_display_names_given(tmp_path: Path, results: Path):
    """Labels from the checkpoints' display names; a method without one keeps its config name, the
    reference rows their fixed labels."""
    src = _source(tmp_path, None)
    t = build_table("mn", "t", ["bbbp", "esol"], METRICS, "scaffold", src, ["random", "sma", "mine"], {}, None,
                    None, [("mine", "linear"), ("none", "linear")], names={"sma": "Self-guided masks"})
    labels = {r.method: r.label for r in t.rows}
    assert labels == {"random": "MAE (random)", "sma": "Self-guided masks", "mine": "mine", "none": "no pretraining",
                      "rf_morgan": "RF on Morgan FP"}
