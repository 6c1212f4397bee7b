"""Property tests: the config and the registry, randomly damaged, load or give one ConfigError
naming the file (and the key) — never another exception, never evaluated as code."""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_src.config import ConfigError, load_config, load_registry

ROOT = Path(__file__).resolve().parents[2]
CI = yaml.safe_load((ROOT / "config/ci.yaml").read_text())
REG = yaml.safe_load((ROOT / "tests/fixtures/datasets.yaml").read_text())
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ODD = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                st.text(max_size=8), st.just([]), st.just({}), st.lists(st.integers(), max_size=3),
                st.just("?1+1"), st.just({"__use_yte__": True}))


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutate(obj, path, op, value):
    obj = copy.deepcopy(obj)
    if not path:
        return value if op == "replace" else obj
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent, dict):
        parent[f"unknown_{last}"] = value
    return obj


def _load(kind: str, data) -> None:
    d = Path(tempfile.mkdtemp(prefix="cfgprops-"))
    try:
        p = d / "x.yaml"
        p.write_text(yaml.safe_dump(data, allow_unicode=True) if not isinstance(data, str) else data)
        try:
            if kind == "config":
                out = load_config(ROOT / "config/config.yaml", [p])
            else:
                out = load_registry(p)
        except ConfigError as e:
            assert str(p) in str(e) or "config/config.yaml" in str(e), str(e)
            return
        assert isinstance(out, dict)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@SETTINGS
@given(data=st.data(), op=st.sampled_from(["delete", "replace", "add"]), value=ODD)
def test_damaged_config_loads_or_gives_config_error(data, op, value):
    path = data.draw(st.sampled_from(list(paths(CI))[1:]))
    _load("config", mutate(CI, path, op, value))


@SETTINGS
@given(data=st.data(), op=st.sampled_from(["delete", "replace", "add"]), value=ODD)
def test_damaged_registry_loads_or_gives_config_error(data, op, value):
    path = data.draw(st.sampled_from(list(paths(REG))[1:]))
    _load("registry", mutate(REG, path, op, value))


@SETTINGS
@given(text=st.text(max_size=200), kind=st.sampled_from(["config", "registry"]))
def test_arbitrary_text_loads_or_gives_config_error(text, kind):
    _load(kind, text)


@SETTINGS
@given(cut=st.floats(0.0, 1.0), kind=st.sampled_from(["config", "registry"]))
def test_truncated_files_load_or_give_config_error(cut, kind):
    text = (ROOT / ("config/ci.yaml" if kind == "config" else "tests/fixtures/datasets.yaml")).read_text()
    _load(kind, text[: int(len(text) * cut)])
