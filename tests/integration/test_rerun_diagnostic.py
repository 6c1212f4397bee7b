"""The held-out diagnostic's settings rerun pretraining, through the real snakemake.

Two HIGGS checkpoints of the CI config (`none` and `random`, seed 0) are built; with
`pretrain_diagnostic.heldout_samples` changed by an override, `snakemake -n` plans both pretrain
jobs again because their params changed, and each `meta.json` records the settings (and hash)
it was built from. The per-key audit of every job kind is tests/unit/test_rerun_triggers.py.
"""
import json
import re

import pytest

from .conftest import copy_workflow, snakemake

pytestmark = pytest.mark.integration

TARGETS = [f"data/checkpoints/higgs/{m}/seed0/meta.json" for m in ("none", "random")]


def _jobs_and_reasons(stdout: str) -> list[tuple[str, str]]:
    """(rule, reason) of every job a dry run lists."""
    out, rule = [], None
    for line in stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        m = re.match(r"^reason: (.*)$", line.strip())
        if m and rule:
            out.append((rule, m.group(1)))
            rule = None
    return out


def test_heldout_samples_reruns_every_pretrain_job(tmp_path):
    wd = copy_workflow(tmp_path)
    r = snakemake(wd, *TARGETS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for t in TARGETS:
        meta = json.loads((wd / t).read_text())
        assert meta["settings"]["diagnostic"]["heldout_samples"] == 1000 and len(meta["settings_hash"]) == 16
    r = snakemake(wd, "-n", *TARGETS)
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]

    over = wd / "heldout.yaml"
    over.write_text("pretrain_diagnostic: {heldout_samples: 50}\n")
    r = snakemake(wd, "-n", *TARGETS, configfiles=("config/ci.yaml", str(over)))
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs_and_reasons(r.stdout)
    pretrain = [why for rule, why in jobs if rule == "pretrain"]
    assert len(pretrain) == 2, jobs
    assert all("Params have changed" in why for why in pretrain), pretrain
    assert {rule for rule, _ in jobs} == {"pretrain"}, jobs   # no data job
