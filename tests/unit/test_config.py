import copy

import pytest
import yaml

from pipeline_src.config import ConfigError, load_config, load_registry, method_config, validate


@pytest.fixture
def cfg(repo_root):
    return yaml.safe_load((repo_root / "config" / "config.yaml").read_text())


def test_default_config_and_registry_validate(repo_root):
    cfg = load_config(repo_root / "config" / "config.yaml")
    reg = load_registry(repo_root / "config" / "datasets.yaml")
    for d in cfg["domains"].values():
        assert d["corpus"] in reg and all(t in reg for t in d["tasks"])
    assert cfg["data"]["download_retries"] >= 0  # default filled from the schema


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["domains"]["chemistry"]["model"].update(dimm=3), "domains.chemistry.model: Additional properties are not allowed ('dimm'"),
        (lambda c: c["domains"]["physics"]["pretrain"].update(steps="many"), "domains.physics.pretrain.steps: 'many' is not of type 'integer'"),
        (lambda c: c.update(seedz=[1]), "(top level): Additional properties are not allowed ('seedz'"),
        (lambda c: c["domains"]["chemistry"].update(splits=["scafold"]), "domains.chemistry.splits.0: 'scafold' is not one of"),
    ],
)
def test_config_errors_name_the_key(cfg, mutate, expected):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate(bad, "config.schema.yaml", "my.yaml")
    assert str(e.value).startswith("my.yaml: ")
    assert expected in str(e.value)


def test_registry_errors_name_the_key(repo_root, tmp_path):
    reg = yaml.safe_load((repo_root / "config" / "datasets.yaml").read_text())
    reg["datasets"]["esol"]["files"][0]["sha256"] = "abc"
    p = tmp_path / "reg.yaml"
    p.write_text(yaml.safe_dump(reg))
    with pytest.raises(ConfigError, match=r"datasets\.esol\.files\.0\.sha256: 'abc' does not match"):
        load_registry(p)
    del reg["datasets"]["esol"]["metric"]
    reg["datasets"]["esol"]["files"][0]["sha256"] = "0" * 64
    p.write_text(yaml.safe_dump(reg))
    with pytest.raises(ConfigError, match=r"datasets\.esol: 'metric' is a required property"):
        load_registry(p)


def test_method_config_merges_domain_overrides(repo_root):
    cfg = load_config(repo_root / "config" / "config.yaml")
    sma = method_config(cfg, "physics", "sma")
    assert sma["mask_ratio"] == cfg["domains"]["physics"]["methods"]["sma"]["mask_ratio"]
    assert sma["num_per_query"] == cfg["methods"]["sma"]["num_per_query"]
    with pytest.raises(ConfigError, match="'nope'"):
        method_config(cfg, "physics", "nope")
