import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY = ["Snakefile", "workflow", "config", "tests/fixtures"]


def snakemake(workdir: Path, *args: str, configfiles=("config/ci.yaml",), timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI (same interpreter) in ``workdir`` (``--configfile`` goes last: it
    takes several values)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", *configfiles]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def copy_workflow(wd: Path) -> Path:
    """Copy the workflow, configs and fixtures into ``wd`` (the package comes from the venv)."""
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, wd / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (wd / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, wd / rel)
    return wd


@pytest.fixture(scope="session")
def ci_workdir(tmp_path_factory) -> Path:
    """A scratch copy of the workflow and the fixtures: the real workflow runs there on tiny data."""
    return copy_workflow(tmp_path_factory.mktemp("ci_run"))


@pytest.fixture(scope="session")
def ci_full_run(ci_workdir) -> Path:
    """The whole DAG (download -> report) on the CI config, once per session, in ``ci_workdir``."""
    r = snakemake(ci_workdir, timeout=3000)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return ci_workdir
