"""Methods from installed packages (entry points of ``maskbench.methods``): found with the built-ins
through one registry, checked when loaded, planned without an entry under ``methods:``, and their
code part of their jobs' settings."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_src.config import ConfigError, config_hash, deep_merge, load_registry
from pipeline_src.methods import registry
from pipeline_src.methods.registry import (BUILTIN, MethodLoadError, available_methods, build_method, method_class,
                                           method_code, outside_code)
from pipeline_src.plan import check, load_methods, mask_methods, planned_masks
from pipeline_src.spec import resolve_pretrain
from plugin_files import install_example, write_plugin

ROOT = Path(__file__).resolve().parents[2]
GOOD = '''
from pipeline_src.methods import MaskedAutoencoder


class FirstHalf(MaskedAutoencoder):
    display_name = "first half"
    defaults = {"share": 0.5}

    def make_mask(self, batch, x_emb, ratio, generator, step):
        n = batch.padding_mask.shape[1]
        import torch
        return (torch.arange(n)[None, :] < int(n * self.cfg["share"])).expand_as(batch.padding_mask) & ~batch.padding_mask, {}
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for throwaway distributions; their modules and loaded classes are
    forgotten afterwards."""
    loaded = dict(registry._LOADED)
    modules = set(sys.modules)
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    yield d
    registry.refresh()
    registry._LOADED.clear()
    registry._LOADED.update(loaded)
    for name in set(sys.modules) - modules:
        if not name.startswith(("pipeline_src", "torch")):
            del sys.modules[name]


def ci_config() -> dict:
    cfg = deep_merge(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                     yaml.safe_load((ROOT / "config/ci.yaml").read_text()))
    cfg["registry"] = str(ROOT / cfg["registry"])
    return cfg


def test_builtins_are_entries_of_the_same_registry():
    methods = available_methods()
    assert set(BUILTIN) <= set(methods)
    for name, value in BUILTIN.items():
        e = methods[name]
        assert e.builtin and e.value == value and e.dist == "maskbench"
        assert method_class(name).name == name
    assert outside_code("sma") is None
    code = method_code("sma_r2")
    assert {"pipeline_src/methods/sma_r2.py", "pipeline_src/methods/sma.py", "pipeline_src/methods/r2mae.py"} <= set(code["files"])


def test_an_entry_point_is_a_method(site):
    write_plugin(site, "first-half", "fh_pkg", {"mod": GOOD}, {"firsthalf": "fh_pkg.mod:FirstHalf"}, version="2.1")
    entry = available_methods()["firsthalf"]
    assert (entry.dist, entry.version, entry.builtin) == ("first-half", "2.1", False)
    cls = method_class("firsthalf")
    assert cls.name == "firsthalf" and registry.display_name(cls) == "first half"
    from pipeline_src.batch import InputSpec

    m = build_method("firsthalf", InputSpec("discrete", 8), {"arch": "transformer", "dim": 16, "depth": 1,
                                                             "heads": 2, "max_len": 8})
    assert m.cfg == {"share": 0.5}
    code = outside_code("firsthalf")
    assert code["distribution"] == "first-half" and code["version"] == "2.1"
    assert set(code["files"]) == {"fh_pkg/__init__.py", "fh_pkg/mod.py"}
    assert all(len(h) == 64 for h in code["files"].values())


def test_two_methods_under_one_name_fail_naming_both(site):
    write_plugin(site / "a", "dist-a", "pa", {"mod": GOOD}, {"dup": "pa.mod:FirstHalf"})
    write_plugin(site / "b", "dist-b", "pb", {"mod": GOOD}, {"dup": "pb.mod:FirstHalf"})
    sys.path[:0] = [str(site / "a"), str(site / "b")]
    try:
        with pytest.raises(MethodLoadError, match=r"two methods .* 'dup'.*dist-a.*dist-b"):
            available_methods()
    finally:
        sys.path.remove(str(site / "a"))
        sys.path.remove(str(site / "b"))


def test_a_plugin_cannot_take_a_builtin_name(site):
    write_plugin(site, "evil", "ev", {"mod": GOOD}, {"sma": "ev.mod:FirstHalf"})
    with pytest.raises(MethodLoadError, match=r"'sma'.*built-in method.*distribution evil 1.0"):
        available_methods()


def test_not_a_method_and_import_errors_name_the_entry_point(site):
    write_plugin(site, "broken-dist", "bk", {"plain": "class NotAMethod:\n    pass\n",
                                             "boom": "import no_such_module_anywhere\n"},
                 {"plain": "bk.plain:NotAMethod", "boom": "bk.boom:X", "gone": "bk.plain:Missing"})
    with pytest.raises(MethodLoadError, match=r"entry point 'plain' = 'bk.plain:NotAMethod'.*broken-dist 1.0.*not a subclass"):
        method_class("plain")
    with pytest.raises(MethodLoadError, match=r"entry point 'boom'.*broken-dist.*failed to import: ModuleNotFoundError.*no_such_module_anywhere"):
        method_class("boom")
    with pytest.raises(MethodLoadError, match=r"'gone'.*failed to import: AttributeError"):
        method_class("gone")
    cfg = ci_config()
    cfg["methods_run"] = ["none", "boom"]
    check(cfg, load_registry(cfg["registry"]))            # the name is installed
    with pytest.raises(ConfigError, match=r"methods_run names 'boom'.*broken-dist.*failed to import"):
        load_methods(cfg)                                 # its class is not


def test_plan_checks_methods_run_against_the_installed_methods(site):
    cfg = ci_config()
    reg = load_registry(cfg["registry"])
    bad = copy.deepcopy(cfg)
    bad["methods_run"] = ["none", "firsthalf"]
    with pytest.raises(ConfigError, match=r"methods_run names 'firsthalf', which is not an installed method "
                                          r"\(installed: metamae, none, r2mae, random, sma, sma_r2, span"):
        check(bad, reg)
    write_plugin(site, "first-half", "fh2", {"mod": GOOD}, {"firsthalf": "fh2.mod:FirstHalf"})
    registry.refresh()                                    # installed into a folder already on sys.path
    check(bad, reg)                                       # no entry under methods: needed
    job = resolve_pretrain(bad, "higgs", "firsthalf")
    assert dict(job.method_cfg) == {"share": 0.5}         # the class's defaults
    assert job.settings()["method_code"]["distribution"] == "first-half"
    assert "method_code" not in resolve_pretrain(bad, "higgs", "none").settings()
    assert "firsthalf" not in mask_methods(bad) and set(mask_methods(cfg)) == {"sma", "sma_r2"}
    assert {p.split("/")[-1] for p in planned_masks(cfg)} == {"sma.json", "sma_r2.json"}


def test_editing_a_plugin_changes_only_its_own_settings(site, tmp_path, monkeypatch):
    """The Snakemake params of its pretraining jobs and its DVC code file change; the other
    methods' settings and every stage spec stay as they are (the plan need not rerun)."""
    from pipeline_src.stages import specs, stage_items, write_method_code

    install_example(site)
    cfg = ci_config()
    cfg["domains"] = {"physics": cfg["domains"]["physics"]}
    cfg["methods_run"] = ["random", "curriculum"]
    cfg["evaluate"]["baselines"] = False
    reg = load_registry(cfg["registry"])
    check(cfg, reg)
    monkeypatch.chdir(ROOT)
    items = stage_items(cfg, reg)
    assert items["methods"] == {"curriculum": {"method": "curriculum", "path": str(site / "maskbench_curriculum")}}
    assert items["pretrain"]["higgs-curriculum"]["code"] == "data/method_code/curriculum.json"
    assert items["evaluate"]["higgs-random"]["code"] == "pipeline_src/methods/random_masking.py"
    before = specs(cfg, reg)
    assert "method_code" not in before["pretrain/higgs/curriculum.json"]["settings"]
    hashes = {m: config_hash(resolve_pretrain(cfg, "higgs", m).settings()) for m in cfg["methods_run"]}
    code_file = tmp_path / "code" / "curriculum.json"
    first = write_method_code("curriculum", code_file)
    assert first["distribution"] == "maskbench-curriculum" and first["version"] == "0.1.0"
    mod = site / "maskbench_curriculum" / "curriculum.py"
    mod.write_text(mod.read_text() + "\n# edited\n")
    registry.refresh()
    assert specs(cfg, reg) == before
    second = write_method_code("curriculum", code_file)
    assert second["files"]["maskbench_curriculum/curriculum.py"] != first["files"]["maskbench_curriculum/curriculum.py"]
    assert second["files"]["maskbench_curriculum/__init__.py"] == first["files"]["maskbench_curriculum/__init__.py"]
    assert config_hash(resolve_pretrain(cfg, "higgs", "random").settings()) == hashes["random"]
    assert config_hash(resolve_pretrain(cfg, "higgs", "curriculum").settings()) != hashes["curriculum"]
