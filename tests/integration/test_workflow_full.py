"""The whole DAG (download -> prepare -> pretrain -> evaluate -> report) on config/ci.yaml."""
import json
import re

import pytest

from .conftest import snakemake

pytestmark = pytest.mark.integration

HEADINGS = ["Findings", "TAPE", "MoleculeNet", "HIGGS", "Linear evaluation", "Compute cost", "Did pretraining learn",
            "Fold sizes"]
NUMBER = r"-?\d+(\.\d+)?"
EXPLAINED = ("not run", "failed (log:", "n/a", "not reported")


@pytest.fixture(scope="module")
def full_run(ci_full_run):
    return ci_full_run


def table_cells(md: str):
    """Every data cell of every markdown table in the report."""
    for line in md.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*:?-", line):
            yield [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_has_every_table_and_no_unexplained_cell(full_run):
    md = (full_run / "reports/all.md").read_text()
    for h in HEADINGS:
        assert re.search(rf"^#+ .*{h}", md, re.M | re.I), h
    rows = list(table_cells(md))
    assert len(rows) > 20
    for row in rows:
        for cell in row[1:]:
            assert cell, row
            assert "nan" not in cell.lower(), row
    # every one of our result cells is a number or an explained gap
    ours = [r for r in rows if r and r[0] and "reported" not in " ".join(r).lower()]
    numeric = 0
    for row in ours:
        for cell in row[1:]:
            plain = cell.replace("**", "")
            if re.match(NUMBER, plain):
                numeric += 1
    assert numeric > 10


def test_every_planned_result_exists_with_provenance(full_run):
    results = sorted((full_run / "data/results").rglob("seed*.json"))
    assert len(results) > 50
    for p in results[:40]:
        r = json.loads(p.read_text())
        assert r["metric"] in {"rmse", "roc_auc", "spearman", "accuracy"}
        assert isinstance(r["test"], float)
        assert r["git"] and r["settings_hash"] and "wall_time_s" in r
        if r["protocol"] != "classical":
            assert len(r["checkpoint_sha256"]) == 64
        if r["protocol"] == "linear":   # the solver's record
            probe = r["probe"]
            assert isinstance(probe["converged"], bool) and probe["solver"], p
            assert probe["max_iter"] is None or 0 <= probe["n_iter"] <= probe["max_iter"], p
            assert probe["converged"] == all(g["converged"] for g in probe["grid"]), p


def test_figures_exist_and_are_linked(full_run):
    md = (full_run / "reports/all.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert links
    for link in links:
        assert (full_run / "reports" / link).exists(), link
    assert any("loss" in link for link in links) and any("mask" in link for link in links)


def test_second_run_does_nothing(full_run):
    r = snakemake(full_run, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def _planned_rules(stdout: str) -> set[str]:
    """Rule names of the dry run's job-count table."""
    rules = set()
    for line in stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) not in ("total", "all"):
            rules.add(m.group(1))
    return rules


def test_params_trigger_reruns_exactly_the_evaluations(full_run):
    """Changing an evaluation setting (evaluate.max_train_rows) reruns every evaluation job and what
    reads their results (report, provenance), and no data or pretraining job."""
    over = full_run / "max_train_rows.yaml"
    over.write_text("evaluate:\n  max_train_rows: 40\n")
    r = snakemake(full_run, "-n", configfiles=("config/ci.yaml", str(over)))
    assert r.returncode == 0, r.stderr[-3000:]
    rules = _planned_rules(r.stdout)
    assert rules and all(x.startswith("evaluate_") or x in ("report", "provenance") for x in rules), rules
    assert any(x.startswith("evaluate_linear_") for x in rules) and any(x.startswith("evaluate_finetune_") for x in rules)
    assert any(x.startswith("evaluate_classical_") for x in rules)
    # a pretraining setting reruns pretraining, evaluation and report, and no data job
    over.write_text("domains:\n  physics:\n    pretrain: {steps: 9}\n")
    r = snakemake(full_run, "-n", configfiles=("config/ci.yaml", str(over)))
    rules = _planned_rules(r.stdout)
    assert "pretrain" in rules and "evaluate_linear_higgs" in rules and "evaluate_linear_esol" not in rules, rules
    assert not any(x.startswith(("download_", "prepare_", "split_")) for x in rules), rules


def test_finetune_results_have_curves(full_run):
    res = sorted((full_run / "data/results/esol").glob("*/finetune/scaffold/seed*.json"))
    assert len(res) == 7 * 2  # every method x 2 pretraining seeds
    for p in res:
        r = json.loads(p.read_text())
        assert r["curve"] and r["chosen"]["epoch"] >= 1 and r["n"]["test"] > 0
    md = (full_run / "reports/all.md").read_text()
    assert re.search(r"^\| no pretraining \| finetune \| ours \|", md, re.M)
    assert "finetune_esol.png" in md
