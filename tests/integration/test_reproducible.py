"""Two runs of the CI config from scratch, in two scratch folders, give identical results: every
metric of every result file, the report's tables (machine-dependent columns aside) and the
weights of every checkpoint (the state tensors, not the file bytes: ``model.pt`` also records
wall times)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from .conftest import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.integration


def _fault_tools():
    spec = importlib.util.spec_from_file_location("fault_inject", ROOT / "scripts" / "fault_inject.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def two_runs(ci_full_run, tmp_path_factory):
    """The session's CI run and a second one from scratch in another folder."""
    wd = copy_workflow(tmp_path_factory.mktemp("repro_second"))
    r = snakemake(wd, timeout=3000)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return [ci_full_run, wd]


RECORDED = ROOT / "tests" / "fixtures" / "ci_results_recorded.json"


def test_every_metric_equals_the_recorded_run(ci_full_run):
    """The CI run gives the metrics recorded before the latest refactors (tests/fixtures/
    ci_results_recorded.json says from which commit, and what an older run agreed on). Floating
    point results are reproducible bit for bit only with the same kernels: on another torch version
    or CPU capability the same results must exist, finite, and the largest deviation is printed."""
    import math

    import torch

    rec = json.loads(RECORDED.read_text())
    now = _fault_tools().result_values(ci_full_run)
    assert set(now) == set(rec["results"]), sorted(set(now) ^ set(rec["results"]))[:5]
    same_kernels = (torch.__version__, torch.backends.cpu.get_cpu_capability()) == (rec["torch"], rec["cpu_capability"])
    if same_kernels:
        different = {k: (rec["results"][k], now[k]) for k in now if now[k] != rec["results"][k]}
        assert not different, f"{len(different)} result(s) differ from the recorded run, e.g. {list(different.items())[:3]}"
    else:
        dev = max(abs(now[k][f] - rec["results"][k][f]) for k in now for f in ("test", "valid")
                  if now[k][f] is not None)
        assert all(math.isfinite(v[f]) for v in now.values() for f in ("test", "valid") if v[f] is not None)
        print(f"recorded on torch {rec['torch']} / {rec['cpu_capability']}, run on {torch.__version__} / "
              f"{torch.backends.cpu.get_cpu_capability()}: largest deviation {dev:.3g}")


def test_every_metric_is_identical(two_runs):
    tools = _fault_tools()
    a, b = (tools.result_values(wd) for wd in two_runs)
    assert a and set(a) == set(b)
    different = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not different, f"{len(different)} result(s) differ, e.g. {list(different.items())[:5]}"


def test_every_checkpoint_has_identical_weights(two_runs):
    tools = _fault_tools()
    a, b = (tools.tensor_hashes(wd) for wd in two_runs)
    assert a and set(a) == set(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_report_tables_and_features_are_identical(two_runs):
    import numpy as np

    tools = _fault_tools()
    ta, tb = (tools.report_tables((wd / "reports/all.md").read_text()) for wd in two_runs)
    assert ta and ta == tb
    fa = sorted(p.relative_to(two_runs[0]) for p in (two_runs[0] / "data/features").rglob("*.npz"))
    assert fa
    for rel in fa:
        x, y = np.load(two_runs[0] / rel), np.load(two_runs[1] / rel)
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            assert np.array_equal(x[k], y[k]), f"{rel}:{k}"


def test_qc_and_splits_are_identical(two_runs):
    a, b = two_runs
    for p in sorted((a / "data/processed").rglob("*")):
        if p.is_file() and p.suffix in (".json", ".parquet"):
            q = b / p.relative_to(a)
            if p.suffix == ".json":
                assert json.loads(p.read_text()) == json.loads(q.read_text()), p.relative_to(a)
            else:
                import pyarrow.parquet as pq

                assert pq.read_table(p).equals(pq.read_table(q)), p.relative_to(a)
