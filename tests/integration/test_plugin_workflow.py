"""A method from another package (the example, examples/maskbench-curriculum, put on the path as
an installed distribution) through Snakemake and through `dvc repro`, on the CI config cut down to
the physics domain and one seed: the plan refuses it while it is not installed; added to a finished
run it computes only its own jobs; editing its package reruns only its own jobs and the report."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_src.config import deep_merge
from plugin_files import install_example

from .conftest import copy_workflow

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN = "config/run.yaml"
PLUGIN = "curriculum"
DISPLAY = "MAE (ratio curriculum)"


def small_config() -> dict:
    """config/config.yaml + config/ci.yaml, physics only, one seed, linear probe, no baselines."""
    cfg = deep_merge(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                     yaml.safe_load((ROOT / "config/ci.yaml").read_text()))
    cfg["domains"] = {"physics": cfg["domains"]["physics"]}
    cfg["methods_run"] = ["none"]
    cfg["seeds"] = [0]
    cfg["pretrain_seeds"] = [0]
    cfg["evaluate"]["baselines"] = False
    cfg["evaluate"]["protocols"] = ["linear"]
    return cfg


def env_with(site: Path | None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    paths = [str(site)] if site else []
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.invalid", GIT_COMMITTER_NAME="ci",
               GIT_COMMITTER_EMAIL="ci@example.invalid", DVC_NO_ANALYTICS="1")
    return env


def run(wd: Path, env: dict, *cmd: str, ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), cwd=wd, capture_output=True, text=True, timeout=timeout, env=env)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def set_methods(wd: Path, methods: list[str]) -> None:
    (wd / RUN).write_text(f"# the run's methods (this test's overlay)\nmethods_run: {json.dumps(methods)}\n")


def files_of(wd: Path, *dirs: str) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns) of every file under ``dirs``."""
    out = {}
    for d in dirs:
        for f in sorted((wd / d).rglob("*")):
            if f.is_file():
                out[f.relative_to(wd).as_posix()] = (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
    return out


def method_files(wd: Path, method: str) -> dict[str, tuple[str, int]]:
    return files_of(wd, f"data/checkpoints/higgs/{method}", f"data/results/higgs/{method}")


def edit_plugin(site: Path) -> None:
    mod = site / "maskbench_curriculum" / "curriculum.py"
    mod.write_text(mod.read_text() + "\n# an edit that changes this module's hash\n")


def check_plugin_outputs(wd: Path) -> None:
    meta = json.loads((wd / f"data/checkpoints/higgs/{PLUGIN}/seed0/meta.json").read_text())
    assert meta["display_name"] == DISPLAY and meta["domain_agnostic"] is True and meta["guided_masks"] is False
    assert meta["method_cfg"] == {"mask_ratio": 0.5, "ratio_start": 0.15, "ramp_steps": 100}   # the class's defaults
    code = meta["method_code"]
    assert code["distribution"] == "maskbench-curriculum" and code["version"] == "0.1.0"
    assert set(code["files"]) == {"maskbench_curriculum/__init__.py", "maskbench_curriculum/curriculum.py"}
    assert json.loads((wd / f"data/results/higgs/{PLUGIN}/linear/fixed/seed0.json").read_text())
    versions = yaml.safe_load((wd / "reports/pipeline_info/software_versions.yaml").read_text())
    assert versions["methods"][PLUGIN]["files"] == code["files"]
    builtins = {k: v for k, v in versions["methods"].items() if k != PLUGIN}
    assert builtins and all(v["distribution"] == "maskbench" for v in builtins.values())
    report = (wd / "reports/all.md").read_text()
    assert PLUGIN in report


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install_example(tmp_path_factory.mktemp("plugin") / "site")


# --- Snakemake ------------------------------------------------------------------------------------

def test_snakemake_plugin_method(tmp_path, site):
    wd = copy_workflow(tmp_path / "wd")
    (wd / "config/config.yaml").write_text(yaml.safe_dump(small_config(), sort_keys=False))
    env = env_with(site)

    def smk(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        return run(wd, env, sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", RUN, ok=ok)

    # not installed: the plan fails, naming the method and what is installed
    set_methods(wd, ["none", PLUGIN])
    r = run(wd, env_with(None), sys.executable, "-m", "snakemake", "-n", "--cores", "1", "reports/all.md",
            "--configfile", RUN, ok=False)
    assert r.returncode != 0
    assert f"methods_run names '{PLUGIN}', which is not an installed method (installed: metamae, none" in r.stdout + r.stderr

    # a finished run without it
    set_methods(wd, ["none"])
    smk("reports/all.md")
    before = method_files(wd, "none")
    assert before

    # added: only its jobs run
    set_methods(wd, ["none", PLUGIN])
    dry = smk("-n", "reports/all.md")
    wildcards = re.findall(r"^\s+wildcards: (.*)$", dry.stdout, re.M)
    assert any(f"method={PLUGIN}" in w for w in wildcards), dry.stdout[-3000:]
    assert not any("method=none" in w for w in wildcards), dry.stdout[-3000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", dry.stdout, re.M))
    assert rules == {"pretrain", "evaluate_linear_higgs", "report", "provenance"}, dry.stdout[-3000:]
    smk("reports/all.md")
    assert method_files(wd, "none") == before            # byte-identical and not rewritten
    check_plugin_outputs(wd)

    # the package edited: its pretraining and evaluation rerun, the report too, nothing else
    plugin_before = method_files(wd, PLUGIN)
    report_mtime = (wd / "reports/all.md").stat().st_mtime_ns
    edit_plugin(site)
    smk("reports/all.md")
    plugin_after = method_files(wd, PLUGIN)
    model = f"data/checkpoints/higgs/{PLUGIN}/seed0/model.pt"
    result = f"data/results/higgs/{PLUGIN}/linear/fixed/seed0.json"
    assert plugin_after[model][1] != plugin_before[model][1] and plugin_after[result][1] != plugin_before[result][1]
    assert (wd / "reports/all.md").stat().st_mtime_ns != report_mtime
    assert method_files(wd, "none") == before
    meta = json.loads((wd / f"data/checkpoints/higgs/{PLUGIN}/seed0/meta.json").read_text())
    sha = hashlib.sha256((site / "maskbench_curriculum/curriculum.py").read_bytes()).hexdigest()
    assert meta["method_code"]["files"]["maskbench_curriculum/curriculum.py"] == sha
    assert "Nothing to be done" in smk("-n", "reports/all.md").stdout


# --- DVC ------------------------------------------------------------------------------------------

DVC_COPY = ["Snakefile", "workflow", "config", "tests/fixtures", "pipeline_src", "dvc.yaml", "params.yaml",
            "dvc_stages.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore"]


def ran_stages(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def test_dvc_plugin_method(tmp_path_factory, site):
    edit_plugin(site)   # whatever the Snakemake test left: this test's own starting point
    wd = tmp_path_factory.mktemp("dvc_plugin")
    for rel in DVC_COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, wd / rel, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        elif src.exists():
            (wd / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, wd / rel)
    (wd / "config/config.yaml").write_text(yaml.safe_dump(small_config(), sort_keys=False))
    params = yaml.safe_load((wd / "params.yaml").read_text())
    params["run_config"] = RUN
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the package from the copy (the stage specs hash the project's files relative to it)
    env = env_with(site)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(wd)])
    py = [sys.executable, "-m", "pipeline_src"]
    dvc = [str(BIN / "dvc"), "repro"]

    set_methods(wd, ["sma"])   # a guided method: the report stage's data/masks out exists
    run(wd, env, *py, "dvc-stages")
    run(wd, env, "git", "init", "-q")
    run(wd, env, "git", "add", "-A")
    run(wd, env, "git", "commit", "-q", "-m", "project copy")
    r = run(wd, env, *dvc)
    assert ran_stages(r.stdout) == {"data", "plan", "pretrain@higgs-sma", "evaluate@higgs-sma", "report"}, r.stdout[-3000:]
    before = method_files(wd, "sma")
    data_before = files_of(wd, "data/processed")

    # added: its stages, the plan and the report; the data stage and sma's stages do not run
    set_methods(wd, ["sma", PLUGIN])
    run(wd, env, *py, "dvc-stages")
    r = run(wd, env, *dvc)
    ours = {f"method_code@{PLUGIN}", f"pretrain@higgs-{PLUGIN}", f"evaluate@higgs-{PLUGIN}", "report"}
    assert ran_stages(r.stdout) == {"plan", *ours}, r.stdout[-3000:]
    assert method_files(wd, "sma") == before and files_of(wd, "data/processed") == data_before
    check_plugin_outputs(wd)
    code = json.loads((wd / f"data/method_code/{PLUGIN}.json").read_text())
    assert code["distribution"] == "maskbench-curriculum" and code["version"] == "0.1.0"

    # the package edited: its code file, its two stages and the report
    edit_plugin(site)
    r = run(wd, env, *dvc)
    assert ran_stages(r.stdout) == ours, r.stdout[-3000:]
    sha = hashlib.sha256((site / "maskbench_curriculum/curriculum.py").read_bytes()).hexdigest()
    assert json.loads((wd / f"data/method_code/{PLUGIN}.json").read_text())["files"]["maskbench_curriculum/curriculum.py"] == sha
    assert method_files(wd, "sma") == before
    assert "Data and pipelines are up to date" in run(wd, env, *dvc).stdout
