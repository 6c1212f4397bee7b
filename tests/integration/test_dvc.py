"""The DVC pipeline (dvc.yaml over the Snakemake targets) in a throwaway git repo.

The repo is a copy of the project whose config/config.yaml is the CI config cut down to the
physics domain (HIGGS fixture), two methods and one seed, so that `dvc repro` of every stage
stays around a minute on 2 cores; the run config is switched through params.yaml
(`run_config`) and the stage lists rewritten (`python -m pipeline_src dvc-stages`), the way a user
switches configs. Tests run in file order and share the repo.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline_src.config import deep_merge

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COPY = ["Snakefile", "workflow", "config", "tests/fixtures", "pipeline_src", "dvc.yaml", "params.yaml", "dvc_stages.yaml",
        ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore"]
BIN = Path(sys.executable).parent
OVERLAY = "config/dvc_ci.yaml"
REPORT_STAGE_FILES = {"data/logs/report.log", "data/logs/provenance.log", "data/benchmarks/report.tsv"}
REPORT_STAGE_DIRS = ("data/masks/", "data/logs/masks/", "data/benchmarks/masks/")  # the mask draws step


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `snakemake` in the stage commands
    env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.invalid", GIT_COMMITTER_NAME="ci",
               GIT_COMMITTER_EMAIL="ci@example.invalid", DVC_NO_ANALYTICS="1")
    return env


def run(repo: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), cwd=repo, capture_output=True, text=True, timeout=timeout, env=_env())
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def dvc(repo: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run(repo, str(BIN / "dvc"), *args, timeout=timeout)


def small_config() -> dict:
    """config/config.yaml + config/ci.yaml, physics only, methods none + sma, seed 0, no baselines."""
    cfg = deep_merge(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                     yaml.safe_load((ROOT / "config/ci.yaml").read_text()))
    cfg["domains"] = {"physics": cfg["domains"]["physics"]}
    cfg["methods_run"] = ["none", "sma"]
    cfg["seeds"] = [0]
    cfg["pretrain_seeds"] = [0]
    cfg["evaluate"]["baselines"] = False
    cfg["evaluate"]["protocols"] = ["linear"]
    return cfg


def out_paths(repo: Path) -> list[str]:
    """Every out and metrics path recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted(o["path"] for s in lock["stages"].values() for o in s.get("outs", []))


def file_hashes(repo: Path, paths: list[str]) -> dict[str, str]:
    out = {}
    for p in paths:
        base = repo / p
        files = [base] if base.is_file() else sorted(f for f in base.rglob("*") if f.is_file())
        for f in files:
            out[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def snakemake_logs(repo: Path) -> list[Path]:
    return sorted((repo / ".snakemake/log").glob("*.snakemake.log"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("dvc_repo")
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, wd / rel, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        elif src.exists():
            (wd / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, wd / rel)
    (wd / "config/config.yaml").write_text(yaml.safe_dump(small_config(), sort_keys=False))
    (wd / OVERLAY).write_text("# the run config DVC uses in this test (params.yaml: run_config)\nseeds: [0]\n")
    params = yaml.safe_load((wd / "params.yaml").read_text())
    params["run_config"] = OVERLAY
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the committed stage lists are the quick default's: the plan stage refuses them for this config
    r = subprocess.run([sys.executable, "-m", "pipeline_src", "dvc-plan", "--out", "data/plan"], cwd=wd,
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "python -m pipeline_src dvc-stages" in r.stderr, r.stderr
    shutil.rmtree(wd / "data/plan", ignore_errors=True)
    run(wd, sys.executable, "-m", "pipeline_src", "dvc-stages")
    run(wd, "git", "init", "-q")
    run(wd, "git", "add", "-A")
    run(wd, "git", "commit", "-q", "-m", "project copy")
    return wd


@pytest.fixture(scope="module")
def first_repro(repo):
    t0 = time.monotonic()
    r = dvc(repo, "repro", timeout=900)
    return repo, r, time.monotonic() - t0


def ran_stages(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def test_repro_builds_every_stage(first_repro):
    repo, r, _ = first_repro
    assert ran_stages(r.stdout) == {"data", "plan", "pretrain@higgs-none", "pretrain@higgs-sma",
                                    "evaluate@higgs-none", "evaluate@higgs-sma", "report"}, r.stdout[-3000:]
    assert (repo / "data/processed/higgs/table.parquet").exists()
    for m in ("none", "sma"):
        assert (repo / f"data/checkpoints/higgs/{m}/seed0/model.pt").exists()
        assert (repo / f"data/results/higgs/{m}/linear/fixed/seed0.json").exists()
    assert "HIGGS" in (repo / "reports/all.md").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["plan"]["params"]["params.yaml"]["run_config"] == OVERLAY
    # the data stage depends on its spec, not on the whole config (adding a method reruns no data step)
    assert "data/plan/data.json" in {d["path"] for d in lock["stages"]["data"]["deps"]}
    assert json.loads((repo / "data/plan/data.json").read_text())["settings"]["datasets"].keys() == {"higgs"}
    spec = json.loads((repo / "data/plan/pretrain/higgs/sma.json").read_text())
    assert spec["seeds"] == [0] and "pipeline_src/methods/sma.py" in spec["code"]
    assert "pipeline_src/methods/span.py" not in spec["code"]


def test_metrics_and_plots(first_repro):
    repo, _, _ = first_repro
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for m in ("none", "sma"):
        assert isinstance(metrics["higgs"]["fixed"][m]["linear"], float)
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "reports/metrics.json" in json.dumps(shown)
    curve = (repo / "reports/plots/pretrain_loss/higgs_sma_seed0.csv").read_text().splitlines()
    assert curve[0] == "step,loss" and len(curve) > 2
    plots = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert any("higgs_sma_seed0.csv" in k for k in plots["data"])


def test_provenance_files(first_repro):
    repo, _, _ = first_repro
    info = repo / "reports/pipeline_info"
    versions = yaml.safe_load((info / "software_versions.yaml").read_text())
    assert versions["python"] and versions["torch"] and versions["snakemake"] and versions["dvc"]
    git = json.loads((info / "git.json").read_text())
    head = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert git["commit"] == head and isinstance(git["dirty"], bool)
    digest = json.loads((info / "config_hash.json").read_text())
    assert digest["sha256"] == hashlib.sha256((info / "config.yaml").read_bytes()).hexdigest()
    assert yaml.safe_load((info / "config.yaml").read_text())["seeds"] == [0]
    assert json.loads((info / "hardware.json").read_text())["cores"] >= 1


def test_second_repro_does_nothing_fast(first_repro):
    repo, _, _ = first_repro
    logs = snakemake_logs(repo)
    t0 = time.monotonic()
    r = dvc(repo, "repro")
    took = time.monotonic() - t0
    assert "Data and pipelines are up to date" in r.stdout, r.stdout
    assert "Running stage" not in r.stdout
    assert snakemake_logs(repo) == logs  # snakemake was not even started
    assert took < 10, f"second dvc repro took {took:.1f} s"
    print(f"second dvc repro: {took:.2f} s")


def test_snakemake_html_report(first_repro):
    repo, _, _ = first_repro
    run(repo, str(BIN / "snakemake"), "--cores", "1", "--report", "reports/report.html", "--configfile", OVERLAY)
    html = repo / "reports/report.html"
    assert html.exists() and html.stat().st_size > 10_000


def test_push_pull_round_trip_and_no_recompute(first_repro, tmp_path_factory):
    repo, _, _ = first_repro
    remote = tmp_path_factory.mktemp("dvc_remote")
    dvc(repo, "remote", "add", "--local", "-d", "ci", str(remote))  # .dvc/config.local, never committed
    paths = out_paths(repo)
    assert {"data/checkpoints/higgs/sma", "data/processed", "data/results/higgs/sma", "reports/metrics.json"} <= set(paths)
    before = file_hashes(repo, paths)
    dvc(repo, "push")
    for p in paths:
        target = repo / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    shutil.rmtree(repo / ".dvc/cache")
    shutil.rmtree(repo / ".snakemake")  # as in a fresh clone: no Snakemake metadata either
    dvc(repo, "pull")
    assert file_hashes(repo, paths) == before
    st = dvc(repo, "status").stdout
    assert "up to date" in st, st

    # files restored by DVC have fresh, unordered mtimes; rebuilding the report must not make
    # Snakemake recompute anything upstream of it: every upstream output, log and benchmark file
    # (logs and benchmarks hold timings, a rerun job rewrites them) stays byte-identical
    r = dvc(repo, "repro", "--force", "--single-item", "report")
    assert ran_stages(r.stdout) == {"report"}, r.stdout[-3000:]
    upstream = [p for p in paths if p.startswith("data/") and p not in REPORT_STAGE_FILES
                and not f"{p}/".startswith(REPORT_STAGE_DIRS)]
    after = file_hashes(repo, upstream)
    assert after and after == {k: v for k, v in before.items() if k in after}
    assert (repo / "reports/all.md").exists() and (repo / "reports/metrics.json").exists()


def test_editing_one_method_reruns_only_its_stages(first_repro):
    """A change to pipeline_src/methods/sma.py reruns sma's pretraining and evaluation (and the
    plan and the report); the `none` stages and their files are left as they are."""
    repo, _, _ = first_repro
    none_files = file_hashes(repo, ["data/checkpoints/higgs/none", "data/results/higgs/none"])
    sma_model = repo / "data/checkpoints/higgs/sma/seed0/model.pt"
    sma_mtime = sma_model.stat().st_mtime_ns
    src = repo / "pipeline_src/methods/sma.py"
    src.write_text(src.read_text() + "\n# an edit that changes this module's hash\n")
    st = dvc(repo, "status").stdout
    assert "plan:" in st and "pretrain@higgs-none" not in st, st
    r = dvc(repo, "repro")
    assert ran_stages(r.stdout) == {"plan", "pretrain@higgs-sma", "evaluate@higgs-sma", "report"}, r.stdout[-3000:]
    assert sma_model.stat().st_mtime_ns != sma_mtime
    assert file_hashes(repo, ["data/checkpoints/higgs/none", "data/results/higgs/none"]) == none_files
