"""Every config key a job reads reruns that job, and only the jobs that read it.

A job's rerun trigger is the hash of its settings: the pretrain rule's ``params.settings``
(:meth:`PretrainJob.settings_hash`), the split and evaluation rules' ``params.settings``
(:func:`plan.split_settings`, :func:`plan.eval_settings`), and the DVC stage specs
(:func:`stages.specs`), which hold the same settings. Each leaf of the CI config (every task
finetuned, so the finetune keys have readers) and a few keys only overrides carry is perturbed in
turn; the jobs whose hash changes must be exactly the ones the table ``READERS`` below declares.
Keys that change which jobs exist (the plan) must leave the hash of every job that stays unchanged.
"""
from __future__ import annotations

import fnmatch
import json

import pytest

from pipeline_src import stages
from pipeline_src.config import deep_merge, load_config, load_registry, validate
from pipeline_src.plan import (eval_settings_hash, pretrain_seeds, settings_hash, split_kinds, split_settings,
                               task_domains, task_runs)
from pipeline_src.spec import resolve_pretrain

PLAN = "plan"   # the key changes which jobs exist


def base_config() -> dict:
    cfg = load_config("config/config.yaml", ["config/ci.yaml"])
    cfg["evaluate"]["finetune"]["tasks"] = None          # every task finetuned: the finetune keys have readers
    cfg["evaluate"]["finetune"]["split_kinds"] = None
    return validate(cfg, "config.schema.yaml", "test config")


def job_hashes(cfg: dict, registry: dict) -> dict[tuple, str]:
    """Every planned job -> the settings hash its rule carries as ``params.settings``."""
    out: dict[tuple, str] = {}
    for dom, d in cfg["domains"].items():
        for m in cfg["methods_run"]:
            job = resolve_pretrain(cfg, d["corpus"], m)
            for s in pretrain_seeds(cfg, dom):
                out["pretrain", d["corpus"], m, s] = job.settings_hash(s)
        for t in d["tasks"]:
            out["split", t] = settings_hash(split_settings(cfg, registry, t))
            for m, p in task_runs(cfg, registry, t):
                out["evaluate", t, m, p] = eval_settings_hash(cfg, registry, t, p)
    return out


def _dom_of_corpus(cfg: dict, corpus: str) -> str:
    return next(dom for dom, d in cfg["domains"].items() if d["corpus"] == corpus)


def _set(cfg: dict, path: tuple) -> bool:
    node = cfg
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            return False
        node = node[k]
    return path[-1] in node


# key pattern -> which jobs read it: fn(job, path, cfg, registry) -> bool. First match wins.
READERS: list[tuple[str, object]] = [
    ("registry", None), ("data.*", None), ("resources.*", None),
    ("report.*", None), ("report.target_delta.*", None),   # read by the report only (it reruns on any config change)
    ("methods_run", PLAN), ("seeds", PLAN), ("pretrain_seeds", PLAN), ("scaffold_cv.repeats", PLAN),
    ("domains.*.corpus", PLAN), ("domains.*.tasks", PLAN), ("domains.*.splits", PLAN), ("domains.*.task_splits.*", PLAN),
    ("evaluate.protocols", PLAN), ("evaluate.baselines", PLAN), ("evaluate.finetune.tasks", PLAN),
    ("evaluate.finetune.split_kinds", PLAN),
    # a domain's model and corpus size: every pretraining job of its corpus, unless the method has its own value
    ("domains.*.model.*", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]
     and not _set(c, ("domains", p[1], "model_by_method", j[2], p[3]))),
    ("domains.*.corpus_subsample", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]),
    # the recipe: every trained method of the corpus (`none` takes no step)
    ("domains.*.pretrain.*", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]
     and j[2] != "none" and not _set(c, ("domains", p[1], "pretrain_by_method", j[2], p[3]))),
    ("domains.*.pretrain_by_method.*.*", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]
     and j[2] == p[3] and j[2] != "none"),
    ("domains.*.model_by_method.*.*", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]
     and j[2] == p[3]),
    ("domains.*.methods.*.*", lambda j, p, c, r: j[0] == "pretrain" and _dom_of_corpus(c, j[1]) == p[1]
     and j[2] == p[3]),
    ("methods.*.*", lambda j, p, c, r: j[0] == "pretrain" and j[2] == p[1]
     and not _set(c, ("domains", _dom_of_corpus(c, j[1]), "methods", p[1], p[2]))),
    # the diagnostic: the held-out rows are kept out of training; its batch size only for a trained model
    ("pretrain_diagnostic.batch_size", lambda j, p, c, r: j[0] == "pretrain" and j[2] != "none"),
    ("pretrain_diagnostic.*", lambda j, p, c, r: j[0] == "pretrain"),
    ("scaffold_cv.*", lambda j, p, c, r: j[0] == "split" and "scaffold_cv" in split_kinds(c, j[1])),
    ("evaluate.max_train_rows", lambda j, p, c, r: j[0] == "evaluate"),
    ("evaluate.feature_batch_size", lambda j, p, c, r: j[0] == "evaluate" and j[3] == "linear"),
    ("evaluate.min_class_examples", lambda j, p, c, r: j[0] == "evaluate" and r[j[1]]["metric"] == "roc_auc"),
    ("evaluate.finetune.*", lambda j, p, c, r: j[0] == "evaluate" and j[3] == "finetune"
     and not _set(c, ("domains", task_domains(c)[j[1]], "finetune", p[2]))),
    ("domains.*.finetune.*", lambda j, p, c, r: j[0] == "evaluate" and j[3] == "finetune"
     and task_domains(c)[j[1]] == p[1]),
]

# keys no config here sets, as an override would
EXTRA = [
    (("domains", "chemistry", "model_by_method", "metamae", "dim"), 48),
    (("domains", "physics", "pretrain_by_method", "sma", "steps"), 9),
    (("domains", "proteins", "methods", "metamae", "inner_lr"), 0.3),
    (("domains", "physics", "finetune", "epochs"), 5),
    (("domains", "chemistry", "model", "pos_embedding"), "sincos"),
]
CHOICES = {"arch": {"transformer": "perceiver", "perceiver": "transformer"}, "schedule": {"cosine": "linear"},
           "projection": {"bn": "mlp"}, "pos_embedding": {"learned": "sincos"}}


def readers_of(path: tuple):
    key = ".".join(path)
    for pattern, who in READERS:
        if fnmatch.fnmatchcase(key, pattern):
            return who
    raise AssertionError(f"{key}: no row in READERS declares who reads it")


def leaves(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, prefix + (k,))
        elif not isinstance(v, dict):
            yield prefix + (k,), v


def perturbed(value, path: tuple):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 if value else 0.1
    if value is None:
        return {"lrs": [1.0e-3, 3.0e-4], "tasks": ["esol"], "split_kinds": ["scaffold"]}.get(path[-1], 500)
    if isinstance(value, str) and path[-1] in CHOICES:
        return CHOICES[path[-1]][value]
    return None   # lists and names: plan keys or files, not perturbed here


def _with(cfg: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(cfg))   # not deepcopy: schema defaults may be one shared {} in several places
    node = out
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    return validate(out, "config.schema.yaml", "perturbed test config")


def cases():
    cfg = base_config()
    out = [(p, perturbed(v, p)) for p, v in leaves(cfg)]
    return [(p, v) for p, v in out if v is not None] + EXTRA


@pytest.fixture(scope="module")
def base():
    cfg = base_config()
    registry = load_registry(cfg["registry"])
    return cfg, registry, job_hashes(cfg, registry)


def test_the_audit_covers_every_key_a_job_reads():
    """Every leaf of the config is declared, and the declaration names readers for each kind of job."""
    paths = [p for p, _ in leaves(base_config())] + [p for p, _ in EXTRA]
    for p in paths:
        readers_of(p)   # fails naming an undeclared key
    kinds = {k for p, v in cases() if callable(readers_of(p)) for k in ("pretrain", "split", "evaluate")}
    assert kinds == {"pretrain", "split", "evaluate"}
    assert len(cases()) > 80


@pytest.mark.parametrize("path,value", cases(), ids=lambda x: ".".join(x) if isinstance(x, tuple) else None)
def test_a_key_reruns_exactly_the_jobs_that_read_it(base, path, value):
    cfg, registry, before = base
    new = _with(cfg, path, value)
    after = job_hashes(new, registry)
    who = readers_of(path)
    common = before.keys() & after.keys()
    changed = {j for j in common if before[j] != after[j]}
    if who == PLAN:
        assert not changed, f"{'.'.join(path)} changes which jobs run, and also the settings of {sorted(changed)[:5]}"
        return
    assert before.keys() == after.keys(), f"{'.'.join(path)} is declared a setting, yet changes the plan"
    expected = set() if who is None else {j for j in before if who(j, path, new, registry)}
    assert changed == expected, (f"{'.'.join(path)}: reruns {sorted(changed - expected)[:5]} that do not read it, "
                                 f"misses {sorted(expected - changed)[:5]} that do")


def test_dvc_specs_change_with_the_same_jobs(base, monkeypatch):
    """The DVC stage specs carry the same settings: a diagnostic key changes every pretraining
    stage's spec and nothing else; an evaluation key only the evaluation stages that read it."""
    cfg, registry, _ = base
    monkeypatch.setattr(stages, "code_digest", lambda kind, method, root=".": {})
    old = stages.specs(cfg, registry)
    for path, value, want in [
            (("pretrain_diagnostic", "heldout_samples"), 50, lambda rel: rel.startswith("pretrain/")),
            (("evaluate", "feature_batch_size"), 64, lambda rel: rel.startswith("evaluate/")),
            (("evaluate", "min_class_examples"), 3, lambda rel: rel.startswith(("evaluate/bbbp/", "classical/bbbp/")))]:
        new = stages.specs(_with(cfg, path, value), registry)
        assert new.keys() == old.keys()
        changed = {rel for rel in old if old[rel]["settings"] != new[rel]["settings"]}
        assert changed == {rel for rel in old if want(rel)}, path


def test_heldout_samples_is_in_every_checkpoints_settings(base):
    cfg, registry, _ = base
    for m in cfg["methods_run"]:
        a = resolve_pretrain(cfg, "higgs", m)
        b = resolve_pretrain(deep_merge(cfg, {"pretrain_diagnostic": {"heldout_samples": 50}}), "higgs", m)
        assert a.settings()["diagnostic"]["heldout_samples"] == 1000
        assert a.settings_hash(0) != b.settings_hash(0)
