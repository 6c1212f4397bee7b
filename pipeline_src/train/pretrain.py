"""``python -m pipeline_src pretrain``: pretrain one method on one domain's corpus.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel over the ranks
(see :mod:`.distributed`); rank 0 writes the outputs and prints the summary.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from ..batch import InputSpec
from ..data.encode import Encoded, load_encoded, table_files
from ..spec import PretrainJob, thaw
from . import distributed as ddp_util
from .data import subsample
from .devices import seed_everything
from .diagnostic import diagnostic, frequency_baseline, heldout_indices
from .diversity import mask_diversity
from .loop import LOG_NAME, MODEL_NAME, pretrain, save_model_file

NO_PRETRAINING = "none"


class CorpusReadError(RuntimeError):
    """A file of the processed corpus cannot be read (truncated or corrupt)."""


def _find_unreadable(processed_dir: Path) -> tuple[Path, Exception] | None:
    """The first file of a processed folder that does not read back whole, with its error."""
    import pyarrow.parquet as pq

    for name in ("standardize.json", "vocab.json"):
        f = processed_dir / name
        if f.exists():
            try:
                json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                return f, e
    try:
        files = table_files(processed_dir)
    except FileNotFoundError:
        return None
    for f in files:
        try:
            pq.read_table(f)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
            return f, e
    return None


def job_meta(job: PretrainJob, seed: int) -> dict[str, Any]:
    """What ``meta.json`` records of the job's resolved settings: the settings (the pretrain rule's
    rerun trigger) and their hash with the seed (its ``params.settings``)."""
    return {"settings": job.settings(), "settings_hash": job.settings_hash(seed)}


def split_corpus(full: Encoded, job: PretrainJob, seed: int) -> tuple[Encoded, Encoded]:
    """(held-out slice of the diagnostic, pretraining data) of a corpus's train fold: the held-out
    rows are the same for every method and seed; the rest is subsampled (``corpus_subsample``) by
    ``seed``. A labelled dataset used as a corpus (HIGGS) is pretrained on its train fold only."""
    held_idx, rest_idx = heldout_indices(len(full), int(job.diagnostic["heldout_samples"]))
    return full.subset(held_idx), subsample(full.subset(rest_idx), job.corpus_subsample, seed)


def load_corpus(processed_dir: str | Path, fold: str | None = "train") -> Encoded:
    """:func:`load_encoded`, with an error that names the damaged file when one cannot be read."""
    d = Path(processed_dir)
    try:
        return load_encoded(d, fold=fold)
    except FileNotFoundError:
        raise
    except Exception as e:
        bad = _find_unreadable(d)
        if bad is None:
            raise CorpusReadError(f"{d}: cannot read the processed corpus: {type(e).__name__}: {e}") from e
        path, err = bad
        raise CorpusReadError(f"{path}: unreadable ({type(err).__name__}: {err}); delete it and rerun the "
                              f"prepare step of this dataset") from e


def _build(method: str, spec: InputSpec, model_cfg: dict[str, Any], method_cfg: dict[str, Any]) -> nn.Module:
    from ..methods import build_method

    return build_method(method, spec, model_cfg, method_cfg)


def write_untrained(out_dir: Path, job: PretrainJob, spec: InputSpec, seed: int, threads: int | None = None,
                    extra_meta: dict[str, Any] | None = None) -> None:
    """Method ``none``: a ``model.pt`` holding the freshly initialized (seeded) model, ``steps: 0``,
    and an empty ``log.jsonl``."""
    model_cfg, method_cfg = thaw(job.model), thaw(job.method_cfg)
    seed_everything(seed, threads)
    method = _build(NO_PRETRAINING, spec, model_cfg, method_cfg)
    meta = {"method": NO_PRETRAINING, "spec": asdict(spec), "model_cfg": model_cfg, "method_cfg": method_cfg,
            "max_len": spec.max_len, "seed": seed, "steps": 0, "final_loss": None, "wall_time_s": 0.0,
            "tokens_per_s": None, "peak_memory_bytes": 0, "device": "cpu",
            "domain_agnostic": bool(getattr(method, "domain_agnostic", True)), **(extra_meta or {})}
    save_model_file(out_dir / MODEL_NAME, method, meta)
    (out_dir / LOG_NAME).write_text("", encoding="utf-8")  # no steps; the file is still an output


def final_metadata(method: nn.Module, heldout: Encoded, data: Encoded, max_len: int, dcfg: dict[str, Any],
                   device: Any, job: PretrainJob) -> dict[str, Any]:
    """What every trained method adds to ``meta.json``, from the same code whatever the method: the
    held-out diagnostic and the mask diversity of its final weights (masks drawn at its last step)."""
    return {"diagnostic": diagnostic(method, heldout, data, max_len, dcfg, device),
            "mask_diversity": mask_diversity(method, heldout, max_len, int(dcfg["batch_size"]), device,
                                             step=int(job.train.as_dict()["steps"]))}


def run_pretrain(job: PretrainJob, processed_dir: str, out_dir: str, seed: int = 0, threads: int | None = None,
                 device: str | None = None) -> None:
    """Pretrain ``job.method`` on ``job.corpus`` (read from ``processed_dir``) into ``out_dir``.

    ``out_dir`` gets ``model.pt`` (+ ``meta.json``), ``log.jsonl`` and ``last.pt``; an existing
    ``last.pt`` from the same configuration is resumed. A one-line JSON summary goes to stdout.
    """
    model_cfg = thaw(job.model)
    max_len = job.max_len
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    dcfg = thaw(job.diagnostic)
    heldout, data = split_corpus(load_corpus(processed_dir, fold="train"), job, seed)
    spec = data.spec(max_len)
    if job.method == NO_PRETRAINING:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun one rank writes the file
            base = frequency_baseline(data)
            write_untrained(out, job, spec, seed, threads,
                            {"diagnostic": {"heldout_loss": None, "baseline": base, "ratio": None,
                                            "heldout_samples": len(heldout), "mask_ratio": float(dcfg["mask_ratio"])},
                             **job_meta(job, seed), "mask_diversity": None})  # no masks: n/a
            print(json.dumps({"method": job.method, "steps": 0}), file=sys.stdout)
        return

    method_cfg = thaw(job.method_cfg)
    dctx, dev = ddp_util.setup(device)
    try:
        seed_everything(seed, threads)  # the model's initialization is part of the seeded run (same on every rank)
        model = _build(job.method, spec, model_cfg, method_cfg)
        summary = pretrain(model, data, job.train.as_dict(), max_len, out, seed, device=dev,
                           threads=threads, model_cfg=model_cfg, method_cfg=method_cfg,
                           final_meta=lambda m: {**final_metadata(m, heldout, data, max_len, dcfg, dev, job),
                                                 **job_meta(job, seed)},
                           data_cfg={"heldout_samples": int(dcfg["heldout_samples"])})
        if dctx is None or dctx.is_main:
            print(json.dumps(summary), file=sys.stdout, flush=True)
    finally:
        ddp_util.cleanup()
