"""The DVC stages of a run, from the plan: one pretraining stage per (corpus, method), one
evaluation stage per (task, method) and one per (task, classical baseline).

Two files come out of it:

- ``dvc_stages.yaml`` (committed, read by ``dvc.yaml`` as ``vars``): the ``foreach`` lists, which
  follow the run config (``params.yaml: run_config``). ``python -m pipeline_src dvc-stages`` rewrites
  it; the ``plan`` stage fails, naming the command, when it lists the stages of another config.
- ``data/plan/<kind>/<...>.json`` (the ``plan`` stage's outs): one spec per stage, holding what
  that stage's jobs depend on besides their input data: the resolved settings and the sha256 of
  every source file the job reads. A stage depends on its spec, not on the config files or the
  code folders, so DVC reruns exactly the stages whose settings or code changed: editing
  ``pipeline_src/methods/span.py`` reruns the ``span`` stages (and the report), nothing else.
- ``data/method_code/<m>.json`` (the ``method_code`` stages' outs, one per method of the run from
  another package): its distribution, version and the sha256 of its module files. The stage
  depends on the package's folder (outside the project), and the method's pretraining and
  evaluation stages depend on the file: editing the package reruns them, and nothing else.

    items = stage_items(cfg, registry)      # {"pretrain": {"moses-sma": {...}}, "evaluate": ..., ...}
    write_specs(cfg, registry, "data/plan", root=".")
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_bytes_atomic
from .config import ConfigError
from .paths import checkpoint_path
from .plan import eval_settings, pretrain_seeds, results_of, split_names, split_settings, task_domains, task_runs
from .spec import resolve_pretrain

STAGES_FILE = "dvc_stages.yaml"
HEADER = ("# The foreach lists of dvc.yaml's per-(corpus, method) and per-(task, method) stages, for the\n"
          "# run config in params.yaml. Written by `python -m pipeline_src dvc-stages`; do not edit.\n")

# what every job reads, whatever the step (paths relative to the project root)
_SHARED = ["Snakefile", "workflow/rules/common.smk", "workflow/schemas", "pipeline_src/*.py", "pipeline_src/data"]
_MODEL = ["pipeline_src/models", "pipeline_src/train", "pipeline_src/methods/__init__.py",
          "pipeline_src/methods/base.py", "pipeline_src/methods/masking.py", "pipeline_src/methods/registry.py"]
_CODE = {
    "pretrain": [*_SHARED, "workflow/rules/pretrain.smk", *_MODEL],
    "evaluate": [*_SHARED, "workflow/rules/evaluate.smk", *_MODEL, "pipeline_src/evaluate"],
    # the classical baselines use no encoder and no pretraining method
    "classical": [*_SHARED, "workflow/rules/evaluate.smk", "pipeline_src/evaluate"],
}


METHOD_CODE_DIR = "data/method_code"


def method_code_dep(method: str) -> str:
    """What a method's pretraining and evaluation stages depend on for its code besides their spec:
    a built-in's module file, or ``data/method_code/<m>.json`` (the ``method_code`` stage's out:
    the code identity of a method from another package, whose files live outside the project)."""
    from .methods.registry import method_entry

    entry = method_entry(method)
    return entry.module.replace(".", "/") + ".py" if entry.builtin else f"{METHOD_CODE_DIR}/{method}.json"


def outside_package_dir(method: str) -> str:
    """The folder of an outside method's top-level package (the ``method_code`` stage's dep):
    relative to the working directory when inside it, else absolute."""
    from .methods.registry import _module_origin, method_entry

    root = _module_origin(method_entry(method).module)[1].resolve()
    here = Path.cwd().resolve()
    return root.relative_to(here).as_posix() if root.is_relative_to(here) else root.as_posix()


def stage_items(cfg: dict[str, Any], registry: dict[str, dict]) -> dict[str, dict[str, dict[str, str]]]:
    """The ``foreach`` dicts of dvc.yaml, keyed by the stage suffix (``pretrain@moses-sma``);
    ``methods``: one ``method_code`` stage per method of the run from another package."""
    from .methods.registry import method_entry

    pretrain: dict[str, dict[str, str]] = {}
    evaluate: dict[str, dict[str, str]] = {}
    classical: dict[str, dict[str, str]] = {}
    methods = {m: {"method": m, "path": outside_package_dir(m)} for m in cfg["methods_run"]
               if not method_entry(m).builtin}
    for d in cfg["domains"].values():
        corpus = d["corpus"]
        for m in cfg["methods_run"]:
            pretrain[f"{corpus}-{m}"] = {"corpus": corpus, "method": m, "code": method_code_dep(m)}
        for ds in d["tasks"]:
            for m, protocol in task_runs(cfg, registry, ds):
                item = {"dataset": ds, "method": m}
                if protocol == "classical":
                    classical[f"{ds}-{m}"] = item
                else:
                    evaluate[f"{ds}-{m}"] = {**item, "corpus": corpus, "code": method_code_dep(m)}
    return {"methods": methods, "pretrain": pretrain, "evaluate": evaluate, "classical": classical}


def load_run_config(params: str | Path = "params.yaml") -> tuple[dict[str, Any], dict[str, dict], str]:
    """The config DVC runs (config/config.yaml with params.yaml's ``run_config`` laid over it, as
    the stage commands' ``snakemake --configfile`` does), its registry, and the run_config name."""
    from .config import load_config, load_registry
    from .plan import check, load_methods

    p = Path(params)
    run_config = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("run_config") if p.exists() else None
    if not run_config:
        raise ConfigError(f"{p}: no 'run_config' key (the config the DVC stages run)")
    base = Path("config/config.yaml")
    cfg = load_config(base, [] if Path(run_config) == base else [run_config])
    registry = load_registry(cfg["registry"])
    check(cfg, registry, source=str(run_config))
    load_methods(cfg, source=str(run_config))
    return cfg, registry, str(run_config)


def stages_text(cfg: dict[str, Any], registry: dict[str, dict], run_config: str) -> str:
    body = {"stages_of": run_config, **stage_items(cfg, registry)}
    return HEADER + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def check_stages_file(path: str | Path, cfg: dict[str, Any], registry: dict[str, dict], run_config: str) -> None:
    """Fail, naming the fix, when ``dvc_stages.yaml`` does not list this run's stages."""
    p = Path(path)
    have = yaml.safe_load(p.read_text(encoding="utf-8")) if p.exists() else None
    want = yaml.safe_load(stages_text(cfg, registry, run_config))
    if have != want:
        why = "is missing" if have is None else f"lists the stages of run_config {have.get('stages_of')!r}"
        if have is not None and have.get("stages_of") == run_config:
            why = f"does not list the stages of {run_config} as it now is"
        raise ConfigError(f"{p} {why}: run `python -m pipeline_src dvc-stages` (it reads params.yaml), then `dvc repro`")


# --- the spec of each stage --------------------------------------------------------------------

def method_sources(method: str, root: str | Path = ".") -> list[str]:
    """The module of a built-in method and the method modules it builds on, relative to root; []
    for a method from another package (its code identity is ``data/method_code/<m>.json``)."""
    from .methods.registry import method_entry, module_closure, _module_origin

    entry = method_entry(method)
    if not entry.builtin:
        return []
    src = _module_origin(entry.module)[0].resolve()
    base = Path(root).resolve()
    if not src.is_relative_to(base):
        raise ConfigError(f"method {method!r} is imported from {src}, outside the project at {base}: "
                          "run the command from the project root")
    return sorted(p.relative_to(base).as_posix() for p in module_closure(src))


def write_method_code(method: str, out: str | Path) -> dict[str, Any]:
    """``data/method_code/<m>.json``: the code identity of a method from another package (its
    distribution, version and the sha256 of its module files), atomically."""
    from .methods.registry import method_code

    code = method_code(method)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, (json.dumps(code, indent=1, sort_keys=True) + "\n").encode())
    return code


def _expand(patterns: list[str], root: Path) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(root.glob(pat)) if "*" in pat else [root / pat]
        for h in hits:
            if h.is_dir():
                out += sorted(f for f in h.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                              and f.suffix != ".pyc")
            elif h.exists():
                out.append(h)
    return sorted(set(out))


def code_digest(kind: str, method: str | None, root: str | Path = ".") -> dict[str, str]:
    """sha256 of every source file a job of this kind (and method) reads, by relative path."""
    base = Path(root)
    patterns = list(_CODE[kind]) + (method_sources(method, base) if kind != "classical" and method else [])
    return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in _expand(patterns, base)}


def data_settings(cfg: dict[str, Any], registry: dict[str, dict]) -> dict[str, Any]:
    """What the ``data`` stage's files depend on besides code: the registry entries of the run's
    datasets, the ``data`` settings and each task's split files and their settings. The methods,
    models and training settings are not part of it: adding a method reruns no data step."""
    used = list(dict.fromkeys(ds for d in cfg["domains"].values() for ds in [d["corpus"], *d["tasks"]]))
    tasks = [t for d in cfg["domains"].values() for t in d["tasks"]]
    return {"registry": cfg["registry"], "data": cfg["data"], "datasets": {ds: registry[ds] for ds in used},
            "splits": {t: {"names": split_names(cfg, t), **split_settings(cfg, registry, t)} for t in tasks}}


def specs(cfg: dict[str, Any], registry: dict[str, dict], root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Relative spec path -> its content, for every stage of the run (``data.json``: the data stage)."""
    items = stage_items(cfg, registry)
    dom_of = {d["corpus"]: dom for dom, d in cfg["domains"].items()}
    digests: dict[tuple[str, str], dict[str, str]] = {}   # (kind, method): the same for every task

    def code(kind: str, m: str) -> dict[str, str]:
        if (kind, m) not in digests:
            digests[kind, m] = code_digest(kind, m, root)
        return digests[kind, m]

    out: dict[str, dict[str, Any]] = {"data.json": {"settings": data_settings(cfg, registry)}}
    for it in items["pretrain"].values():
        corpus, m = it["corpus"], it["method"]
        job = resolve_pretrain(cfg, corpus, m)
        # an outside method's code identity is its own stage's out (data/method_code), which its
        # stages depend on: the plan does not rerun when only the package changes
        settings = {k: v for k, v in job.settings().items() if k != "method_code"}
        out[f"pretrain/{corpus}/{m}.json"] = {
            "settings": settings, "seeds": pretrain_seeds(cfg, dom_of[corpus]),
            "code": code("pretrain", m)}
    for kind in ("evaluate", "classical"):
        for it in items[kind].values():
            ds, m = it["dataset"], it["method"]
            protocols = [p for mm, p in task_runs(cfg, registry, ds) if mm == m]
            out[f"{kind}/{ds}/{m}.json"] = {
                "settings": {p: eval_settings(cfg, registry, ds, p) for p in protocols},
                "results": [k.path() for p in protocols for k in results_of(cfg, ds, m, p)],
                "code": code(kind, m)}
    return out


def write_specs(cfg: dict[str, Any], registry: dict[str, dict], out: str | Path, root: str | Path = ".") -> int:
    """Write every stage spec under ``out`` (one JSON each, atomically); returns how many."""
    all_specs = specs(cfg, registry, root)
    for rel, content in all_specs.items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(content, indent=1, sort_keys=True) + "\n").encode())
    return len(all_specs)


def targets(cfg: dict[str, Any], registry: dict[str, dict], corpus: str | None = None,
            dataset: str | None = None, method: str | None = None) -> list[str]:
    """The Snakemake targets of one stage: a (corpus, method)'s checkpoints, or a (task, method)'s
    results."""
    if corpus is not None:
        doms = [dom for dom, d in cfg["domains"].items() if d["corpus"] == corpus]
        if not doms or method not in cfg["methods_run"]:
            raise ConfigError(f"no pretraining stage for corpus {corpus!r} and method {method!r} in this config")
        return [checkpoint_path(corpus, method, s) for s in pretrain_seeds(cfg, doms[0])]
    if dataset not in task_domains(cfg):
        raise ConfigError(f"task {dataset!r} is not in this config's domains")
    runs = [p for m, p in task_runs(cfg, registry, dataset) if m == method]
    if not runs:
        raise ConfigError(f"no evaluation of task {dataset!r} with {method!r} in this config")
    return [k.path() for p in runs for k in results_of(cfg, dataset, method, p)]
