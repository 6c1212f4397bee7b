import copy

import pytest
import yaml

from pipeline_src.config import ConfigError, load_config, load_registry, validate
from pipeline_src.spec import resolve_pretrain


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


def test_pretrain_job_merges_domain_overrides(repo_root):
    cfg = load_config(repo_root / "config" / "config.yaml")
    sma = resolve_pretrain(cfg, "higgs", "sma").method_cfg
    assert sma["mask_ratio"] == cfg["domains"]["physics"]["methods"]["sma"]["mask_ratio"]
    assert sma["num_per_query"] == cfg["methods"]["sma"]["num_per_query"]
    with pytest.raises(ConfigError, match="'nope'"):
        resolve_pretrain(cfg, "higgs", "nope")


def test_pretrain_job_is_frozen_and_checks_override_keys(repo_root):
    cfg = load_config(repo_root / "config" / "config.yaml")
    job = resolve_pretrain(cfg, "higgs", "random")
    with pytest.raises(Exception):
        job.train.lr = 1.0                                   # frozen dataclass
    with pytest.raises(TypeError):
        job.method_cfg["mask_ratio"] = 0.9                   # read-only mapping
    assert job.settings()["pretrain"] == cfg["domains"]["physics"]["pretrain"]   # same keys and values as the YAML
    cfg["domains"]["physics"]["pretrain_by_method"] = {"sma": {"lr": 3e-4}, "random": {"lrr": 1e-3}}
    assert resolve_pretrain(cfg, "higgs", "sma").train.lr == 3e-4
    assert resolve_pretrain(cfg, "higgs", "none").train.lr == cfg["domains"]["physics"]["pretrain"]["lr"]
    with pytest.raises(ConfigError, match=r"domains\.physics\.pretrain \(with pretrain_by_method\.random\): unknown key 'lrr'"):
        resolve_pretrain(cfg, "higgs", "random")


def test_evaluation_job_resolved_once(repo_root):
    """The finetune recipe of a task: evaluate.finetune with the domain's finetune over it, typed and
    frozen; an unknown key (only a domain override can carry one past the schema) fails by name."""
    from pipeline_src.plan import eval_settings_hash
    from pipeline_src.spec import FinetuneSpec, resolve_evaluate

    cfg = load_config(repo_root / "config" / "config.yaml")
    reg = load_registry(repo_root / "config" / "datasets.yaml")
    ev = resolve_evaluate(cfg, reg, "higgs", "sma", "finetune")
    assert (ev.task, ev.metric) == (reg["higgs"]["task"], reg["higgs"]["metric"])
    assert ev.finetune.batch_size == cfg["domains"]["physics"]["finetune"]["batch_size"]       # the domain's
    assert ev.finetune.epochs == cfg["evaluate"]["finetune"]["epochs"]                          # the shared one
    assert ev.finetune.learning_rates == [cfg["domains"]["physics"]["finetune"]["lr"]]
    assert ev.settings_hash == eval_settings_hash(cfg, reg, "higgs", "finetune")
    with pytest.raises(AttributeError):
        ev.finetune.epochs = 1                                                                 # frozen
    assert resolve_evaluate(cfg, reg, "esol", "sma", "linear").finetune is None
    bad = copy.deepcopy(cfg)
    bad["domains"]["physics"]["finetune"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"evaluate.finetune \(with domains.physics.finetune\): unknown key 'epoch'"):
        resolve_evaluate(bad, reg, "higgs", "sma", "finetune")
    with pytest.raises(ConfigError, match="unknown protocol 'probe'"):
        resolve_evaluate(cfg, reg, "esol", "sma", "probe")
    assert FinetuneSpec(lrs=(1e-4, 3e-4)).learning_rates == [1e-4, 3e-4]


def test_model_by_method_is_merged_for_its_method_only(repo_root):
    cfg = load_config(repo_root / "config" / "config.yaml")
    domain_model = cfg["domains"]["physics"]["model"]
    assert resolve_pretrain(cfg, "higgs", "metamae").settings()["model"] == domain_model   # none given: the domain's
    cfg["domains"]["physics"]["model_by_method"] = {"metamae": {"dim": 256, "heads": 8, "pos_embedding": "sincos"}}
    job = resolve_pretrain(cfg, "higgs", "metamae")
    assert job.model == {**domain_model, "dim": 256, "heads": 8, "pos_embedding": "sincos"}
    assert job.settings()["model"]["dim"] == 256                      # the rerun trigger sees it
    assert resolve_pretrain(cfg, "higgs", "random").model == domain_model
    with pytest.raises(TypeError):
        job.model["dim"] = 8                                          # read-only
    cfg["domains"]["physics"]["model_by_method"] = {"metamae": {"dimm": 256}}
    with pytest.raises(ConfigError, match=r"domains\.physics\.model \(with model_by_method\.metamae\): unknown key 'dimm'"):
        resolve_pretrain(cfg, "higgs", "metamae")
    cfg["domains"]["physics"]["model_by_method"] = {"metamae": {"pos_embedding": "rope"}}
    with pytest.raises(ConfigError, match=r"model_by_method\.metamae\)\.pos_embedding: 'rope' is not one of"):
        resolve_pretrain(cfg, "higgs", "metamae")
    resolve_pretrain(cfg, "higgs", "random")                          # another method's override is not its concern


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"metamae": {"dimm": 3}}, "domains.physics.model_by_method.metamae: Additional properties are not allowed ('dimm'"),
        ({"metamae": {"pos_embedding": "rope"}}, "domains.physics.model_by_method.metamae.pos_embedding: 'rope' is not one of"),
        ({"metamae": {"dim": 0}}, "domains.physics.model_by_method.metamae.dim: 0 is less than the minimum of 1"),
    ],
)
def test_model_by_method_schema_names_the_key(cfg, over, expected):
    bad = copy.deepcopy(cfg)
    bad["domains"]["physics"]["model_by_method"] = over
    with pytest.raises(ConfigError) as e:
        validate(bad, "config.schema.yaml", "my.yaml")
    assert expected in str(e.value)


def test_model_by_method_fills_no_defaults(cfg):
    """The override holds only what it says: no schema default (mlp_ratio, dropout, ...) overrides the domain's."""
    cfg["domains"]["physics"]["model_by_method"] = {"metamae": {"dim": 256}}
    validate(cfg, "config.schema.yaml", "my.yaml")
    assert cfg["domains"]["physics"]["model_by_method"] == {"metamae": {"dim": 256}}
    assert "model_by_method" not in cfg["domains"]["chemistry"]      # absent stays absent (settings hashes unchanged)


def test_by_method_overrides_must_name_a_method(repo_root):
    from pipeline_src.plan import check

    cfg = load_config(repo_root / "config" / "config.yaml")
    reg = load_registry(repo_root / cfg["registry"])
    check(cfg, reg)
    for key in ("model_by_method", "pretrain_by_method"):
        bad = copy.deepcopy(cfg)
        bad["domains"]["physics"][key] = {"metamea": {}}
        with pytest.raises(ConfigError, match=rf"domains\.physics\.{key} names 'metamea'"):
            check(bad, reg)


def test_model_keys_match_the_schema(repo_root):
    from pipeline_src.spec import MODEL_KEYS

    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    domain = schema["properties"]["domains"]["additionalProperties"]["properties"]
    assert set(domain["model"]["properties"]) == set(MODEL_KEYS)
    assert set(domain["model_by_method"]["additionalProperties"]["properties"]) == set(MODEL_KEYS)
    assert not any("default" in v for v in domain["model_by_method"]["additionalProperties"]["properties"].values())
