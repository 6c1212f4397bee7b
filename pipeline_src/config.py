"""Loading and merging the run config and the dataset registry.

Snakemake validates both against ``workflow/schemas`` (filling defaults); the CLI does the same
through :func:`load_config` / :func:`load_registry`, so a step run by hand sees the same values.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "workflow" / "schemas"


class ConfigError(ValueError):
    """A config or registry value is wrong; the message names the file and the key."""


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def validate(data: dict[str, Any], schema_name: str, source: str) -> dict[str, Any]:
    """Validate ``data`` against ``workflow/schemas/<schema_name>``, filling defaults.

    Uses snakemake.utils.validate, the same call the Snakefile makes; errors are re-raised as
    :class:`ConfigError` naming ``source`` and the offending key path.
    """
    from snakemake.utils import validate as sm_validate

    try:
        sm_validate(data, str(SCHEMA_DIR / schema_name), set_default=True)
    except Exception as e:  # snakemake wraps jsonschema's ValidationError in WorkflowError
        raise ConfigError(f"{source}: {_first_error(data, schema_name) or e}") from None
    return data


def _first_error(data: dict[str, Any], schema_name: str) -> str | None:
    """The most relevant schema violation as 'key.path: message'."""
    import jsonschema

    schema = yaml.safe_load((SCHEMA_DIR / schema_name).read_text())
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"{where}: {err.message}"


def load_config(path: str | Path, overrides: list[str | Path] = ()) -> dict[str, Any]:
    cfg = _read_yaml(path)
    for extra in overrides:
        cfg = deep_merge(cfg, _read_yaml(extra))
    return validate(cfg, "config.schema.yaml", str(path))


def load_registry(path: str | Path) -> dict[str, dict[str, Any]]:
    reg = validate(_read_yaml(path), "datasets.schema.yaml", str(path))
    return reg["datasets"]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def domain_of(cfg: dict[str, Any], dataset: str) -> str:
    """The domain whose corpus or tasks name ``dataset``."""
    for name, d in cfg["domains"].items():
        if dataset == d["corpus"] or dataset in d["tasks"]:
            return name
    raise ConfigError(f"dataset {dataset!r} is in no domain of the config (domains.*.corpus / tasks)")


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def effective_config_path(cfg: dict[str, Any], root: str | Path = "data/run_config") -> str:
    """Where :func:`write_effective_config` puts ``cfg``: ``<root>/<hash>.yaml`` (nothing written)."""
    return str(Path(root) / f"{config_hash(cfg)}.yaml")


def write_effective_config(cfg: dict[str, Any], root: str | Path = "data/run_config") -> str:
    """Write ``cfg`` to :func:`effective_config_path` (atomically, once) and return the path."""
    path = Path(effective_config_path(cfg, root))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        os.replace(tmp, path)
    return str(path)
