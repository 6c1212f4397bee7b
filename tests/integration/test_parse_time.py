"""`snakemake -n` is side-effect free: parsing the workflow (any config) writes no file and starts
no process; the effective config appears only once jobs run (the `onstart` handler)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import copy_workflow

# Runs Snakemake's CLI in this interpreter with an audit hook that records every process started
# from the workflow's own code (the Snakefile, workflow/rules/*.smk, pipeline_src); Snakemake's and
# its plugins' own probes (e.g. the SLURM plugin looking for `sacct`) are not the workflow's doing.
DRY_RUN = """
import json, sys
events = []
KINDS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty")
def ours(frame):
    while frame is not None:
        f = frame.f_code.co_filename
        if f.endswith(("Snakefile", ".smk")) or "pipeline_src" in f:
            return f
        frame = frame.f_back
    return None
def hook(name, args):
    if name in KINDS:
        where = ours(sys._getframe(1))
        if where:
            events.append([name, repr(args)[:200], where])
sys.addaudithook(hook)
from snakemake.cli import main
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
else:
    code = 0
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "events": events}, f)
"""


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if ".snakemake" not in p.relative_to(root).parts}


@pytest.mark.parametrize("configfile", ["config/ci.yaml", "config/config.yaml", "config/paper.yaml"])
def test_dry_run_writes_nothing_and_starts_no_process(tmp_path, configfile):
    wd = copy_workflow(tmp_path / "wd")
    before = _tree(wd)
    record = tmp_path / "events.json"
    r = subprocess.run([sys.executable, "-c", DRY_RUN, str(record), "-n", "--cores", "2", "reports/all.md",
                        f"--configfile={configfile}"], cwd=wd, capture_output=True, text=True, timeout=600)
    out = json.loads(record.read_text())
    assert out["code"] in (0, None), r.stdout[-3000:] + r.stderr[-3000:]
    assert out["events"] == [], out["events"]
    assert _tree(wd) - before == set(), sorted(_tree(wd) - before)


def test_effective_config_written_when_jobs_run(ci_full_run):
    configs = list((ci_full_run / "data/run_config").glob("*.yaml"))
    assert len(configs) == 1, configs
    info = json.loads((ci_full_run / "reports/pipeline_info/config_hash.json").read_text())
    assert configs[0].stem == info["settings_hash"]
