"""The plan of a run: every checkpoint and result a (validated) config asks for, and the settings
each one depends on. The Snakemake rules, the report ("not run" / "failed" / stale cells) and the
metrics all take their lists from here, so they cannot drift apart.

Evaluation units are paired: for a task, every method (``none`` included) and every classical
baseline is run on the same ``(seed, split)`` units — ``seed`` from the domain's ``pretrain_seeds``
(the checkpoint a pretrained method's result uses, and the seed of the probe / finetune run),
``split`` from the task's split kinds.
"""
from __future__ import annotations

from typing import Any

from .config import ConfigError, config_hash as settings_hash, deep_merge
from .paths import ResultKey, checkpoint_path, masks_path, meta_path, split_kind

# classical baseline -> the input kind it applies to (the functions live in evaluate/baselines.py)
BASELINE_KINDS: dict[str, str] = {"rf_morgan": "smiles", "gbm": "numeric", "aac_linear": "protein"}
PROTOCOLS = ("linear", "finetune", "classical")

# a method -> the note the report's Findings carry whenever it runs (how it differs from its paper)
METHOD_NOTES: dict[str, str] = {
    "metamae": ("MetaMAE is held against its paper and released code point by point in docs/metamae_vs_paper.md; "
                     "the differences listed there hold for every MetaMAE number here (the released code decays every "
                     "parameter, keeps its learning rate constant, has a class token and a tied output head, and syncs "
                     "BatchNorm across GPUs; the paper's linear protocol trains its classifier with Adam)."),
}

def baselines_for(input_kind: str) -> list[str]:
    return [name for name, kind in BASELINE_KINDS.items() if kind == input_kind]


def task_domains(cfg: dict[str, Any]) -> dict[str, str]:
    """task -> its domain."""
    return {t: dom for dom, d in cfg["domains"].items() for t in d["tasks"]}


def pretrain_seeds(cfg: dict[str, Any], domain: str) -> list[int]:
    """``domains.<d>.pretrain_seeds``, else the top-level ``pretrain_seeds``."""
    seeds = cfg["domains"][domain].get("pretrain_seeds") or cfg["pretrain_seeds"]
    return [int(s) for s in seeds]


def split_kinds(cfg: dict[str, Any], dataset: str) -> list[str]:
    """The task's split kinds: ``domains.<d>.task_splits.<task>``, else ``domains.<d>.splits``."""
    d = cfg["domains"][task_domains(cfg)[dataset]]
    return list(d.get("task_splits", {}).get(dataset) or d.get("splits", ["fixed"]))


def split_names_of_kind(cfg: dict[str, Any], kind: str) -> list[str]:
    if kind in ("scaffold", "fixed", "column"):
        return [kind]
    if kind == "scaffold_cv":
        cv = cfg["scaffold_cv"]
        return [f"scaffold_cv_r{r}_f{k}" for r in range(int(cv["repeats"])) for k in range(int(cv["folds"]))]
    return [f"{kind}_seed{s}" for s in cfg["seeds"]]


def split_names(cfg: dict[str, Any], dataset: str) -> list[str]:
    """Every split file stem of a task (``data/processed/<task>/splits/<name>.parquet``)."""
    return [n for kind in split_kinds(cfg, dataset) for n in split_names_of_kind(cfg, kind)]


def finetune_tasks(cfg: dict[str, Any]) -> list[str]:
    tasks = [t for d in cfg["domains"].values() for t in d["tasks"]]
    if "finetune" not in cfg["evaluate"]["protocols"]:
        return []
    chosen = cfg["evaluate"]["finetune"].get("tasks")
    return tasks if chosen is None else [t for t in tasks if t in chosen]


def protocol_split_names(cfg: dict[str, Any], dataset: str, protocol: str) -> list[str]:
    """The splits a protocol runs on: all of the task's, except that finetuning may be limited to
    ``evaluate.finetune.split_kinds`` (finetuning costs a training run per unit)."""
    names = split_names(cfg, dataset)
    if protocol == "finetune":
        kinds = cfg["evaluate"]["finetune"].get("split_kinds")
        if kinds is not None:
            names = [n for n in names if split_kind(n) in kinds]
    return names


def task_runs(cfg: dict[str, Any], registry: dict[str, dict], dataset: str) -> list[tuple[str, str]]:
    """(method, protocol) pairs planned for a task."""
    ev = cfg["evaluate"]
    runs = [(m, p) for p in ev["protocols"] if p != "finetune" for m in cfg["methods_run"]]
    if dataset in finetune_tasks(cfg):
        runs += [(m, "finetune") for m in cfg["methods_run"]]
    if ev["baselines"]:
        runs += [(b, "classical") for b in baselines_for(registry[dataset]["input"]["kind"])]
    return runs


def unit_seeds(cfg: dict[str, Any], dataset: str, protocol: str) -> list[int]:
    """The seeds of a task's units: the domain's pretraining seeds; the classical baselines, which
    use no checkpoint, run with the first seed only (they are a reference, not part of the tests)."""
    seeds = pretrain_seeds(cfg, task_domains(cfg)[dataset])
    return seeds[:1] if protocol == "classical" else seeds


def results_of(cfg: dict[str, Any], dataset: str, method: str, protocol: str, seed: int | None = None) -> list[ResultKey]:
    """The results of one (task, method, protocol), for one seed or for every seed of its units."""
    seeds = unit_seeds(cfg, dataset, protocol) if seed is None else [int(seed)]
    names = protocol_split_names(cfg, dataset, protocol)
    return [ResultKey(dataset, method, protocol, s, k) for k in seeds for s in names]


def planned_results(cfg: dict[str, Any], registry: dict[str, dict]) -> list[ResultKey]:
    """Every result the config asks for, in a stable order."""
    out: list[ResultKey] = []
    for d in cfg["domains"].values():
        for ds in d["tasks"]:
            for method, protocol in task_runs(cfg, registry, ds):
                out += results_of(cfg, ds, method, protocol)
    return out


def planned_checkpoints(cfg: dict[str, Any]) -> list[str]:
    """Every pretraining output (``none`` included: its seeded random initialization)."""
    return [checkpoint_path(d["corpus"], m, s) for dom, d in cfg["domains"].items()
            for m in cfg["methods_run"] for s in pretrain_seeds(cfg, dom)]


def planned_metas(cfg: dict[str, Any]) -> list[str]:
    """The ``meta.json`` of every checkpoint (what the report reads of pretraining)."""
    return [meta_path(d["corpus"], m, s) for dom, d in cfg["domains"].items()
            for m in cfg["methods_run"] for s in pretrain_seeds(cfg, dom)]


def method_names(cfg: dict[str, Any]) -> list[str]:
    """The methods a config names: ``methods_run``, then the other entries of ``methods``."""
    return list(dict.fromkeys([*cfg["methods_run"], *cfg["methods"]]))


def load_methods(cfg: dict[str, Any], source: str = "config") -> None:
    """Import the class of every method in ``methods_run`` (imports torch): a package that fails to
    import, or whose class is not a Method, fails the plan, naming its entry point and the cause."""
    from .methods.registry import MethodLoadError, method_class

    for m in cfg["methods_run"]:
        try:
            method_class(m)
        except MethodLoadError as e:
            raise ConfigError(f"{source}: methods_run names {m!r}: {e}") from e


def mask_methods(cfg: dict[str, Any]) -> list[str]:
    """The methods of the run whose masks the report draws (SMA Fig. 2): those whose class says
    ``guided_masks = True``. Loads the classes (imports torch); the report reads meta.json instead."""
    from .methods.registry import method_class

    return [m for m in cfg["methods_run"] if method_class(m).guided_masks]


def planned_masks(cfg: dict[str, Any]) -> dict[str, str]:
    """mask-draw file -> the checkpoint it comes from (first pretraining seed), per corpus and
    SMA-style method of the run."""
    guided = mask_methods(cfg)
    return {masks_path(d["corpus"], m): checkpoint_path(d["corpus"], m, pretrain_seeds(cfg, dom)[0])
            for dom, d in cfg["domains"].items() for m in guided}


# --- settings: what each output depends on (its rerun trigger and its staleness check) -----------

def finetune_settings(cfg: dict[str, Any], domain: str) -> dict[str, Any]:
    """``evaluate.finetune`` with ``domains.<domain>.finetune`` over it, less the plan keys."""
    ft = deep_merge(cfg["evaluate"]["finetune"], cfg["domains"][domain].get("finetune", {}))
    return {k: v for k, v in ft.items() if k not in ("tasks", "split_kinds")}


def eval_settings(cfg: dict[str, Any], registry: dict[str, dict], dataset: str, protocol: str) -> dict[str, Any]:
    """Everything an evaluation result depends on besides its input files (table, split, checkpoint)."""
    entry = registry[dataset]
    out: dict[str, Any] = {"protocol": protocol, "max_train_rows": cfg["evaluate"]["max_train_rows"],
                           "task": {k: entry.get(k) for k in ("task", "metric", "labels", "input")}}
    if entry.get("metric") == "roc_auc":   # the fold check that lets a ROC-AUC result be written at all
        out["min_class_examples"] = cfg["evaluate"]["min_class_examples"]
    if protocol == "linear":               # the frozen features are computed in batches of this size
        out["feature_batch_size"] = cfg["evaluate"]["feature_batch_size"]
    if protocol == "finetune":
        out["finetune"] = finetune_settings(cfg, task_domains(cfg)[dataset])
    return out


def eval_settings_hash(cfg: dict[str, Any], registry: dict[str, dict], dataset: str, protocol: str) -> str:
    return settings_hash(eval_settings(cfg, registry, dataset, protocol))


def split_settings(cfg: dict[str, Any], registry: dict[str, dict], dataset: str) -> dict[str, Any]:
    """What a task's split files depend on besides its table."""
    out: dict[str, Any] = {"split": registry[dataset].get("split", {})}
    if "scaffold_cv" in split_kinds(cfg, dataset):
        out["scaffold_cv"] = {k: cfg["scaffold_cv"][k] for k in ("folds", "valid_fraction")}
    return out


def check(cfg: dict[str, Any], registry: dict[str, dict], source: str = "config") -> None:
    """Cross-key checks the schema cannot express; each error names the key."""
    seen: dict[str, str] = {}
    for dom, d in cfg["domains"].items():
        for ds in [d["corpus"], *d["tasks"]]:
            if ds not in registry:
                raise ConfigError(f"{source}: domains.{dom} names dataset {ds!r}, which is not in {cfg['registry']}")
        for ds in d["tasks"]:
            if ds in seen:
                raise ConfigError(f"{source}: task {ds!r} is in domains.{seen[ds]} and domains.{dom}")
            seen[ds] = dom
        # task_splits and evaluate.finetune.tasks may name tasks this run does not have (an overlay
        # config drops tasks): such entries are unused
    # every method the run names is installed: a built-in or an entry point of an installed package
    # (names only, nothing imported: load_methods imports them)
    from .methods.registry import GROUP, available_methods

    installed = available_methods()
    named = [("methods_run", m) for m in cfg["methods_run"]]
    named += [(f"domains.{dom}.{key}", m) for dom, d in cfg["domains"].items()
              for key in ("methods", "pretrain_by_method", "model_by_method") for m in d.get(key, {})]
    for where, m in named:
        if m not in installed:
            raise ConfigError(f"{source}: {where} names {m!r}, which is not an installed method (installed: "
                              f"{', '.join(sorted(installed))}; a method from another package is an entry "
                              f"point of the group {GROUP!r})")
