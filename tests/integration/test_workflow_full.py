"""The whole DAG (download -> prepare -> pretrain -> evaluate -> report) on config/ci.yaml."""
import json
import re

import pytest

from .conftest import snakemake

pytestmark = pytest.mark.integration

HEADINGS = ["TAPE", "MoleculeNet", "HIGGS", "Linear evaluation", "Compute cost"]
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
