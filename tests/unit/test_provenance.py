"""Provenance collection (pipeline_src.report.provenance) and the DVC metrics/plots export."""
import hashlib
import json
import subprocess

import pytest
import yaml

from pipeline_src.report import metrics as metrics_mod
from pipeline_src.report import provenance as prov

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def _git(repo, *args):
    import os

    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture
def git_repo(tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_software_versions_lists_the_stack():
    v = prov.software_versions()
    for key in ("python", "torch", "rdkit", "snakemake", "dvc", "numpy", "pandas", "scikit-learn", "cuda"):
        assert key in v, key
    assert v["python"].count(".") == 2
    assert v["numpy"] and v["pandas"] and v["torch"]
    assert set(v["cuda"]) == {"built_with", "available", "cudnn", "device_count"}
    assert isinstance(v["cuda"]["available"], bool)


def test_missing_package_is_none(monkeypatch):
    monkeypatch.setattr(prov, "DISTRIBUTIONS", {"nope": "surely-not-an-installed-distribution-xyz"})
    assert prov.package_versions() == {"nope": None}


def test_git_commit_and_dirty_flag(git_repo):
    info = prov.git_info(git_repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_repo, capture_output=True, text=True).stdout.strip()
    assert info["commit"] == head and len(head) == 40
    assert info["dirty"] is False
    (git_repo / "untracked.txt").write_text("x")  # untracked files do not make the tree dirty
    assert prov.git_info(git_repo)["dirty"] is False
    (git_repo / "a.txt").write_text("two\n")
    info = prov.git_info(git_repo)
    assert info["dirty"] is True and info["changed_files"] == ["a.txt"]


def test_git_outside_a_repo(tmp_path):
    info = prov.git_info(tmp_path)
    assert info["commit"] is None and info["dirty"] is None and info["error"]


def test_hardware_info():
    hw = prov.hardware_info()
    assert hw["cores"] >= 1 and hw["cpu"] and isinstance(hw["gpus"], list)
    assert hw["ram_bytes"] is None or hw["ram_bytes"] > 0


def test_write_pipeline_info(git_repo, tmp_path):
    cfg = tmp_path / "effective.yaml"
    cfg.write_text("seeds: [0, 1]\nmethods_run: [sma]\n")
    out = tmp_path / "pipeline_info"
    paths = prov.write_pipeline_info(cfg, out, git_repo)
    assert sorted(p.name for p in out.iterdir()) == sorted(prov.OUT_FILES)
    assert (out / "config.yaml").read_bytes() == cfg.read_bytes()
    digest = json.loads(paths["config_hash.json"].read_text())
    assert digest["sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    from pipeline_src.config import config_hash

    assert digest["settings_hash"] == config_hash({"seeds": [0, 1], "methods_run": ["sma"]})
    assert json.loads(paths["git.json"].read_text())["commit"]
    assert yaml.safe_load(paths["software_versions.yaml"].read_text())["python"]
    assert json.loads(paths["hardware.json"].read_text())["cores"] >= 1


def test_cli_provenance(git_repo, tmp_path):
    from pipeline_src.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("seeds: [0]\n")
    assert main(["provenance", "--config", str(cfg), "--out-dir", str(tmp_path / "pi"), "--repo", str(git_repo)]) == 0
    assert (tmp_path / "pi" / "git.json").exists()


def _result(root, ds, method, protocol, split, seed, test):
    p = root / ds / method / protocol / split / f"seed{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"dataset": ds, "method": method, "protocol": protocol, "split": split, "seed": seed,
                             "metric": "roc_auc", "test": test, "valid": test}))


def test_headline_metrics_nested_means(tmp_path):
    _result(tmp_path, "bbbp", "sma", "linear", "scaffold_balanced_seed0", 0, 0.6)
    _result(tmp_path, "bbbp", "sma", "linear", "scaffold_balanced_seed1", 1, 0.8)
    _result(tmp_path, "bbbp", "sma", "linear", "scaffold", 0, 0.7)
    m = metrics_mod.headline_metrics(tmp_path)
    assert m["bbbp"]["scaffold_balanced"]["sma"]["linear"] == pytest.approx(0.7)
    assert m["bbbp"]["scaffold"]["sma"]["linear"] == pytest.approx(0.7)
    only = metrics_mod.headline_metrics(tmp_path, ["bbbp/sma/linear/scaffold/seed0.json"])
    assert list(only["bbbp"]) == ["scaffold"]


def test_loss_tables_from_log(tmp_path):
    log = tmp_path / "moses" / "sma" / "seed1" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"step": 2, "loss": 1.5}\n{"step": 1, "loss": 2.0, "lr": 0.1}\nnot json\n')
    tables = metrics_mod.loss_tables(tmp_path, [("moses", "sma", 1), ("moses", "sma", 0), ("moses", "random", 1)])
    assert list(tables) == [("moses", "sma", 1)]
    assert tables[("moses", "sma", 1)].splitlines() == ["step,loss", "1,2.0", "2,1.5"]
