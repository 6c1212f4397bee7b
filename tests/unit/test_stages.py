"""The DVC stage plan (pipeline_src/stages.py): the foreach lists, the per-stage specs and the code
each stage's spec hashes."""
import json

import pytest
import yaml

from pipeline_src.config import ConfigError
from pipeline_src.stages import (check_stages_file, code_digest, load_run_config, method_sources, stage_items,
                                 stages_text, targets, write_specs)


@pytest.fixture
def at_root(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    return repo_root


def test_committed_stage_lists_match_the_default_config(at_root):
    """dvc_stages.yaml in the repo is what `python -m pipeline_src dvc-stages` writes for params.yaml."""
    cfg, registry, run_config = load_run_config("params.yaml")
    check_stages_file("dvc_stages.yaml", cfg, registry, run_config)
    items = stage_items(cfg, registry)
    assert items["pretrain"]["moses-sma"] == {"corpus": "moses", "method": "sma", "code": "pipeline_src/methods/sma.py"}
    assert items["methods"] == {}                                      # no method from another package
    assert items["evaluate"]["bbbp-sma_r2"] == {"dataset": "bbbp", "method": "sma_r2", "corpus": "moses",
                                                "code": "pipeline_src/methods/sma_r2.py"}
    assert items["classical"]["higgs-gbm"] == {"dataset": "higgs", "method": "gbm"}
    n_tasks = sum(len(d["tasks"]) for d in cfg["domains"].values())
    assert len(items["evaluate"]) == n_tasks * len(cfg["methods_run"])


def test_stale_stage_lists_fail_naming_the_command(at_root, tmp_path):
    cfg, registry, run_config = load_run_config("params.yaml")
    other = dict(cfg, methods_run=["none", "random"])
    stale = tmp_path / "dvc_stages.yaml"
    stale.write_text(stages_text(other, registry, run_config))
    with pytest.raises(ConfigError, match=r"does not list the stages of config/config.yaml.*dvc-stages"):
        check_stages_file(stale, cfg, registry, run_config)
    stale.write_text(stages_text(cfg, registry, "config/paper.yaml"))
    with pytest.raises(ConfigError, match=r"lists the stages of run_config 'config/paper.yaml'"):
        check_stages_file(stale, cfg, registry, run_config)
    with pytest.raises(ConfigError, match="is missing"):
        check_stages_file(tmp_path / "nope.yaml", cfg, registry, run_config)


def test_method_sources_follow_the_imports_within_methods(at_root):
    assert method_sources("span") == ["pipeline_src/methods/base.py", "pipeline_src/methods/masking.py",
                                      "pipeline_src/methods/span.py"]
    combo = method_sources("sma_r2")
    assert {"pipeline_src/methods/sma_r2.py", "pipeline_src/methods/sma.py", "pipeline_src/methods/r2mae.py"} <= set(combo)
    assert "pipeline_src/methods/span.py" not in combo and "pipeline_src/methods/metamae.py" not in combo
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method_sources("nope")


def test_a_method_module_is_hashed_only_into_its_own_stages(at_root):
    sma = code_digest("pretrain", "sma")
    none = code_digest("pretrain", "none")
    classical = code_digest("classical", "gbm")
    assert "pipeline_src/methods/sma.py" in sma and "pipeline_src/methods/sma.py" not in none
    assert "pipeline_src/models/encoders.py" in sma and "pipeline_src/models/encoders.py" in none
    assert "workflow/rules/pretrain.smk" in sma and "workflow/rules/evaluate.smk" not in sma
    assert "pipeline_src/evaluate/run.py" in code_digest("evaluate", "sma")
    assert not any(p.startswith(("pipeline_src/methods/", "pipeline_src/models/")) for p in classical)
    assert not any(p.endswith(".pyc") or "__pycache__" in p for p in sma)


def test_specs_hold_settings_seeds_and_results(at_root, tmp_path):
    cfg, registry, _ = load_run_config("params.yaml")
    n = write_specs(cfg, registry, tmp_path)
    items = stage_items(cfg, registry)
    assert n == sum(len(v) for k, v in items.items() if k != "methods") + 1   # + data.json
    spec = json.loads((tmp_path / "pretrain/higgs/sma.json").read_text())
    assert spec["seeds"] == cfg["pretrain_seeds"]
    assert spec["settings"]["method_cfg"]["mask_ratio"] == cfg["domains"]["physics"]["methods"]["sma"]["mask_ratio"]
    ev = json.loads((tmp_path / "evaluate/higgs/sma.json").read_text())
    assert set(ev["settings"]) == {"linear", "finetune"}           # higgs is the finetune task of the default
    assert ev["results"] == targets(cfg, registry, dataset="higgs", method="sma")
    assert set(json.loads((tmp_path / "evaluate/bbbp/sma.json").read_text())["settings"]) == {"linear"}
    # a setting of one domain changes that domain's specs only
    cfg2 = yaml.safe_load(yaml.safe_dump(cfg))
    cfg2["domains"]["physics"]["pretrain"]["steps"] += 1
    write_specs(cfg2, registry, tmp_path / "b")
    for rel, same in (("pretrain/higgs/sma.json", False), ("pretrain/moses/sma.json", True),
                      ("evaluate/bbbp/sma.json", True)):
        assert ((tmp_path / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()) is same, rel


def test_targets_of_a_stage(at_root):
    cfg, registry, _ = load_run_config("params.yaml")
    assert targets(cfg, registry, corpus="higgs", method="sma") == [
        f"data/checkpoints/higgs/sma/seed{s}/model.pt" for s in cfg["pretrain_seeds"]]
    assert all("/rf_morgan/classical/" in t for t in targets(cfg, registry, dataset="bbbp", method="rf_morgan"))
    with pytest.raises(ConfigError, match="no evaluation of task 'bbbp' with 'gbm'"):
        targets(cfg, registry, dataset="bbbp", method="gbm")
    with pytest.raises(ConfigError, match="no pretraining stage for corpus 'uniprot'"):
        targets(cfg, registry, corpus="uniprot", method="sma")


def test_module_closure_reads_both_import_forms(tmp_path):
    from pipeline_src.methods.registry import module_closure as _module_closure

    (tmp_path / "a.py").write_text("from . import b, c\nfrom .d import thing\nimport os\n")
    (tmp_path / "b.py").write_text("from .a import x\n")          # a cycle ends
    (tmp_path / "c.py").write_text("")
    (tmp_path / "d.py").write_text("from ..other import y\n")     # a parent package: not a sibling
    (tmp_path / "e.py").write_text("")                             # not imported
    assert sorted(p.name for p in _module_closure(tmp_path / "a.py")) == ["a.py", "b.py", "c.py", "d.py"]


def test_method_sources_outside_the_root_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="outside the project"):
        method_sources("sma", root=tmp_path)
