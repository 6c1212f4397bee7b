# Shared helpers: validated config, the dataset registry, and the list of targets.
import os
import shlex
import sys

import yaml

from pipeline_src import plan as _plan
from pipeline_src.config import config_hash, effective_config_path, load_registry, validate as _validate, write_effective_config
from pipeline_src.spec import resolve_pretrain

# Snakemake evaluates a config file holding `__use_yte__: true` as a template before this code
# runs; such files are refused, so no config of a run can be code.
for _cf in workflow.configfiles:
    with open(_cf, encoding="utf-8") as _f:
        if "__use_yte__" in (yaml.safe_load(_f) or {}):
            raise ValueError(f"{_cf}: '__use_yte__' templates are not allowed in maskbench configs")
_validate(config, "config.schema.yaml", "config (config/config.yaml + --configfile/--config)")
REGISTRY = load_registry(config["registry"])
# The effective config (config files + --config overrides, defaults filled) as one file that every
# rule's command reads, so a step always sees exactly what Snakemake saw. Its name is its content's
# hash; it is written when jobs start (`onstart`), never while the workflow is parsed, so
# `snakemake -n` writes nothing.
CONFIG_PATH = effective_config_path(config)


onstart:
    write_effective_config(config)

# the interpreter running Snakemake, so rules see the same installed environment
PY = f"{shlex.quote(sys.executable)} -m pipeline_src"

_plan.check(config, REGISTRY)
# the class of every method in methods_run (built-in or from an installed package; imports torch)
_plan.load_methods(config)
# every method name the config knows, for the rules' wildcard constraints
METHODS_RE = "|".join(_plan.method_names(config))
_task_domain = _plan.task_domains(config)

# $MASKBENCH_SLURM_GPU_MODEL (e.g. a100): the GPU type the GPU steps ask the SLURM executor for
_GPU_MODEL = os.environ.get("MASKBENCH_SLURM_GPU_MODEL", "").strip()


def step_resources(step, gpu=False):
    """A step's `resources:` from the config's `resources.<step>` (mem_mb, runtime). GPU steps
    also ask for one GPU: locally `--resources gpu=N` caps how many run at once; on SLURM it is
    --gpus=1 (--gpus=<model>:1 with $MASKBENCH_SLURM_GPU_MODEL)."""
    res = {k: v for k, v in config["resources"][step].items() if k != "threads"}
    if gpu:
        res["gpu"] = 1
        if _GPU_MODEL:
            res["gpu_model"] = _GPU_MODEL
    return res


def used_datasets():
    out = []
    for d in config["domains"].values():
        for ds in [d["corpus"], *d["tasks"]]:
            if ds not in out:
                out.append(ds)
    return out


def raw_files(ds):
    return [f"data/raw/{ds}/{f['name']}" for f in REGISTRY[ds]["files"]]


def is_continuous(ds):
    return REGISTRY[ds]["input"]["kind"] == "numeric"


def is_sharded(ds):
    return REGISTRY[ds]["role"] == "corpus" and not is_continuous(ds)


def processed_files(ds):
    """The files `prepare` writes for a dataset (the rule's declared outputs)."""
    base = f"data/processed/{ds}"
    table = f"{base}/shards" if is_sharded(ds) else f"{base}/table.parquet"
    encoding = f"{base}/standardize.json" if is_continuous(ds) else f"{base}/vocab.json"
    return {"table": table, "qc": f"{base}/qc.json", "encoding": encoding}


def data_targets():
    out = []
    for d in config["domains"].values():
        out += list(processed_files(d["corpus"]).values())
        for t in d["tasks"]:
            out += list(processed_files(t).values())
            out += [f"data/processed/{t}/splits/{s}.parquet" for s in _plan.split_names(config, t)]
    return list(dict.fromkeys(out))


DATA_TARGETS = data_targets()
