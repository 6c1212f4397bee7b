"""The run config resolved into typed, frozen objects: what one pretraining or evaluation job runs.

The raw config is a nested dict whose pieces combine in several places (``methods.<m>`` under
``domains.<d>.methods.<m>``, ``domains.<d>.pretrain`` under ``pretrain_by_method.<m>``). They are
merged once, here, into a :class:`PretrainJob`; the CLI resolves it and the training code takes
it, never the dict. Merged values are checked by name, so a key that only an override carries
(``pretrain_by_method`` is free-form in the schema) still fails with the key named.
``domains.<d>.model_by_method.<m>`` is the model's counterpart: one method's own architecture
(e.g. MetaMAE's), merged over ``domains.<d>.model``; the checkpoint records the merged model, and
evaluation rebuilds the encoder from it.

    job = resolve_pretrain(load_config("config/config.yaml"), "moses", "sma")
    job.train.lr, job.model["dim"], job.method_cfg["mask_ratio"], job.settings()   # settings(): the rerun trigger
    ev = resolve_evaluate(cfg, registry, "bbbp", "sma", "finetune")   # ev.finetune.epochs, ev.settings_hash
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping

from .config import ConfigError, deep_merge, domain_of
from .plan import PROTOCOLS, eval_settings_hash, finetune_settings

UNTRAINED = "none"   # the method whose checkpoint is the seeded initialization (no training steps)
DIAGNOSTIC_DEFAULTS = {"heldout_samples": 1000, "mask_ratio": 0.3, "batch_size": 256}
# the keys of domains.<d>.model (workflow/schemas/config.schema.yaml) and the values of the named ones
MODEL_KEYS = ("arch", "dim", "depth", "heads", "mlp_ratio", "max_len", "num_latents", "decoder_dim",
              "decoder_heads", "dropout", "decoder_dropout", "pos_embedding")
MODEL_REQUIRED = ("arch", "dim", "depth", "heads", "max_len")
MODEL_CHOICES = {"arch": ("transformer", "perceiver"), "pos_embedding": ("learned", "sincos")}


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only deep copy (nested mappings read-only too)."""
    return MappingProxyType({k: _frozen(v) if isinstance(v, Mapping) else copy.deepcopy(v) for k, v in d.items()})


def thaw(d: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, writable deep copy of a frozen mapping (for JSON, hashing and model builders)."""
    return {k: thaw(v) if isinstance(v, Mapping) else copy.deepcopy(v) for k, v in d.items()}


def _unknown_keys(d: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


@dataclass(frozen=True)
class FinetuneSpec:
    """The finetuning recipe of one task (``evaluate.finetune`` with ``domains.<d>.finetune`` over
    it, less the plan keys ``tasks`` / ``split_kinds``); ``lrs``, when set, is a grid chosen on valid."""
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1.0e-4
    lrs: tuple[float, ...] | None = None
    weight_decay: float = 0.01
    patience: int = 10
    warmup_frac: float = 0.0
    schedule: str = "constant"

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str) -> "FinetuneSpec":
        """From the merged, schema-validated mapping; a key no field holds fails by name."""
        _unknown_keys(d, cls, where)
        vals = dict(d)
        if vals.get("lrs") is not None:
            vals["lrs"] = tuple(float(v) for v in vals["lrs"])
        return cls(**vals)   # the values' types and ranges: the config schema, which names the key

    @property
    def learning_rates(self) -> list[float]:
        return list(self.lrs) if self.lrs else [float(self.lr)]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = list(self.lrs) if self.lrs is not None else None
        return d


@dataclass(frozen=True)
class EvalJob:
    """Everything a (task, method, protocol) evaluation job depends on besides its input files."""
    dataset: str
    method: str
    protocol: str
    task: str                       # the registry's task type: classification, regression, ...
    metric: str
    max_train_rows: int | None
    min_class_examples: int
    feature_batch_size: int
    finetune: FinetuneSpec | None   # the finetune protocol only
    settings_hash: str              # recorded in every result; the report refuses a stale one


def resolve_evaluate(cfg: Mapping[str, Any], registry: Mapping[str, Mapping[str, Any]], dataset: str,
                     method: str, protocol: str) -> EvalJob:
    """The :class:`EvalJob` of ``method`` on task ``dataset`` under ``protocol`` in a validated config."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if dataset not in registry:
        raise ConfigError(f"{cfg['registry']}: no dataset named {dataset!r}")
    domain = domain_of(cfg, dataset)
    entry, ev = registry[dataset], cfg["evaluate"]
    ft = None
    if protocol == "finetune":
        where = "evaluate.finetune" + (f" (with domains.{domain}.finetune)" if cfg["domains"][domain].get("finetune") else "")
        ft = FinetuneSpec.from_mapping(finetune_settings(cfg, domain), where)
    return EvalJob(dataset=dataset, method=method, protocol=protocol, task=entry["task"], metric=entry["metric"],
                   max_train_rows=ev["max_train_rows"], min_class_examples=int(ev["min_class_examples"]),
                   feature_batch_size=int(ev["feature_batch_size"]), finetune=ft,
                   settings_hash=eval_settings_hash(cfg, registry, dataset, protocol))


@dataclass(frozen=True)
class TrainSpec:
    """Optimizer and schedule of one pretraining run (``domains.<d>.pretrain`` + ``pretrain_by_method``)."""
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    checkpoint_every: int = 100

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str) -> "TrainSpec":
        _unknown_keys(d, cls, where)
        missing = [k for k in ("steps", "batch_size", "lr") if k not in d]
        if missing:
            raise ConfigError(f"{where}: missing key {missing[0]!r}")
        try:
            spec = cls(**d)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        for key, ok in (("steps", isinstance(spec.steps, int) and spec.steps >= 0),
                        ("batch_size", isinstance(spec.batch_size, int) and spec.batch_size >= 1),
                        ("lr", isinstance(spec.lr, (int, float)) and spec.lr > 0),
                        ("warmup_steps", isinstance(spec.warmup_steps, int) and spec.warmup_steps >= 0)):
            if not ok:
                raise ConfigError(f"{where}.{key}: invalid value {getattr(spec, key)!r}")
        return spec

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_model(model: Mapping[str, Any], where: str) -> None:
    """Unknown, missing or out-of-choice keys of a (merged) model mapping, named with ``where``."""
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(MODEL_KEYS))})")
    missing = [k for k in MODEL_REQUIRED if k not in model]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    for key, choices in MODEL_CHOICES.items():
        if key in model and model[key] not in choices:
            raise ConfigError(f"{where}.{key}: {model[key]!r} is not one of {', '.join(choices)}")
    for key in ("dim", "depth", "heads", "max_len"):
        if not (isinstance(model[key], int) and model[key] >= 1):
            raise ConfigError(f"{where}.{key}: invalid value {model[key]!r}")


@dataclass(frozen=True)
class PretrainJob:
    """Everything a (corpus, method) pretraining job depends on besides its seed."""
    domain: str
    corpus: str
    method: str
    model: Mapping[str, Any]            # domains.<d>.model with model_by_method.<m> over it
    train: TrainSpec
    method_cfg: Mapping[str, Any]       # methods.<m> with domains.<d>.methods.<m> over it
    corpus_subsample: int | None
    diagnostic: Mapping[str, Any]       # pretrain_diagnostic, defaults filled
    method_code: Mapping[str, Any] | None = None   # an outside method's code identity (methods/registry.py)

    @property
    def max_len(self) -> int:
        return int(self.model["max_len"])

    def settings(self) -> dict[str, Any]:
        """What the job's result depends on (its rerun trigger and the checkpoint's settings).
        ``diagnostic`` is in it: ``heldout_samples`` decides which rows of the corpus the model
        trains on, and the held-out loss in ``meta.json`` is part of the job's output."""
        out = {"corpus": self.corpus, "subsample": self.corpus_subsample, "model": thaw(self.model),
               "pretrain": self.train.as_dict(), "method": self.method, "method_cfg": thaw(self.method_cfg),
               "diagnostic": thaw(self.diagnostic),
               **({"method_code": thaw(self.method_code)} if self.method_code else {})}
        if self.method == UNTRAINED:   # no training steps, no held-out loss: its recipe is not read
            del out["pretrain"]
            out["diagnostic"] = {k: v for k, v in out["diagnostic"].items() if k != "batch_size"}
        return out

    def settings_hash(self, seed: int) -> str:
        """The hash of :meth:`settings` with the seed: one checkpoint's rerun trigger (the pretrain
        rule's ``params.settings``), recorded in its ``meta.json``."""
        from .config import config_hash

        return config_hash({**self.settings(), "seed": int(seed)})


def resolve_pretrain(cfg: Mapping[str, Any], corpus: str, method: str) -> PretrainJob:
    """The :class:`PretrainJob` of ``method`` on ``corpus`` (a domain's corpus) in a validated config."""
    domain = domain_of(cfg, corpus)
    d = cfg["domains"][domain]
    if corpus != d["corpus"]:
        raise ConfigError(f"{corpus!r} is a task of domain {domain!r}, not its pretraining corpus ({d['corpus']!r})")
    from .methods.registry import method_class, method_entry, outside_code

    entry = method_entry(method)   # fails naming what is installed
    # a method with no entry under 'methods' runs with its class's defaults
    base_cfg = cfg["methods"][method] if method in cfg["methods"] else dict(method_class(method).defaults)
    method_cfg = deep_merge(base_cfg, d.get("methods", {}).get(method, {}))
    over = d.get("pretrain_by_method", {}).get(method, {})
    where = f"domains.{domain}.pretrain" + (f" (with pretrain_by_method.{method})" if over else "")
    train = TrainSpec.from_mapping(deep_merge(d["pretrain"], over), where)
    own = d.get("model_by_method", {}).get(method, {})
    model = deep_merge(d["model"], own)
    check_model(model, f"domains.{domain}.model" + (f" (with model_by_method.{method})" if own else ""))
    return PretrainJob(domain=domain, corpus=corpus, method=method, model=_frozen(model), train=train,
                       method_cfg=_frozen(method_cfg), corpus_subsample=d.get("corpus_subsample"),
                       diagnostic=_frozen({**DIAGNOSTIC_DEFAULTS, **cfg.get("pretrain_diagnostic", {})}),
                       method_code=None if entry.builtin else _frozen(outside_code(method) or {}))
