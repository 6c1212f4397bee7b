"""The pretraining loop: one method, one corpus, one output directory.

``out_dir`` receives ``last.pt`` (resumable checkpoint, every ``checkpoint_every`` steps and at the
end), ``log.jsonl`` (one line per step) and ``model.pt`` (the final weights and metadata). A run that
finds ``last.pt`` resumes from it; on the CPU a resumed run ends with the same weights, bit for bit,
as one that was never interrupted. The checkpoint also holds the log up to its step, so a resumed
run rewrites ``log.jsonl`` exactly (Snakemake deletes declared outputs before rerunning a job).

Under ``torchrun`` (a process group of several ranks, see :mod:`.distributed`) the model is wrapped
in ``DistributedDataParallel``: every rank draws the same global batch and trains on its own slice,
rank 0 alone writes ``last.pt``, ``log.jsonl`` and ``model.pt``, and every rank resumes from the
same ``last.pt`` (which holds each rank's random-generator states). The logged loss is the
sample-weighted mean over the global batch. The world size is part of the run hash: a run is
resumed with as many ranks as it started with.

Optimizer: AdamW (β = 0.9/0.999, decoupled weight decay) with no weight decay on biases, norm
weights, embedding tables and other 1-d or token/embedding parameters (positional embeddings, mask
tokens); learning rate with linear warm-up then cosine decay to zero; gradient clipping by norm.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..batch import InputSpec
from ..paths import LOG_FILE, META_FILE
from ..data.encode import Encoded
from .checkpoint import atomic_save, load_checkpoint, load_verified, remove_stale_tmp, rng_state, run_hash, save_checkpoint, set_rng_state
from . import distributed as ddp_util
from .data import BucketBatchSampler
from .devices import autocast, peak_memory_bytes, pick_device, seed_everything

CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.pt"
LOG_NAME = LOG_FILE
# keys of the pretrain config that do not change the trajectory, so they stay out of the run hash
_HASH_EXEMPT = {"checkpoint_every"}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor for step ``s`` (0-based): (s + 1) / warmup during warm-up, then cosine from 1 to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weight matrices, and everything else without decay."""
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim <= 1 or id(p) in no_decay_ids or "embed" in leaf or "token" in leaf:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _run_config(method: nn.Module, spec: InputSpec, train_cfg: dict, max_len: int, seed: int,
                model_cfg: dict, method_cfg: dict, corpus_size: int, world_size: int = 1,
                data_cfg: dict | None = None) -> dict[str, Any]:
    config = {
        "method": method.name,
        "spec": asdict(spec),
        "model_cfg": model_cfg,
        "method_cfg": method_cfg,
        "train_cfg": {k: v for k, v in train_cfg.items() if k not in _HASH_EXEMPT},
        "max_len": max_len,
        "seed": seed,
        "corpus_size": corpus_size,
    }
    if data_cfg is not None:  # which rows of the corpus are trained on (e.g. the held-out slice left out)
        config["data_cfg"] = data_cfg
    if world_size > 1:  # absent for one process, so single-process hashes (and checkpoints) are unchanged
        config["world_size"] = world_size
    return config


def _write_log(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_model_file(path: str | Path, method: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` atomically; loadable with ``torch.load(weights_only=True)``.
    The metadata (plus ``encoder_params``) also goes to ``meta.json`` beside it, first: the report
    reads that file and never loads a checkpoint. The method's own description is added to it
    (``methods.registry.describe``: display name, domain_agnostic, guided_masks, code identity)."""
    from ..methods.registry import describe

    meta = {**meta, **describe(method)}   # display_name, domain_agnostic, guided_masks, method_code
    state = _cpu_state_dict(method)
    encoder_params = sum(int(v.numel()) for k, v in state.items() if k.startswith("encoder."))
    write_json_atomic(Path(path).with_name(META_FILE), {**meta, "encoder_params": encoder_params})
    atomic_save({"state_dict": state, "meta": meta}, path)


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu",
                    encoder_only: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the method saved in a ``model.pt`` (or only its ``.encoder``) and its metadata."""
    from ..methods import build_method

    blob = load_verified(path, map_location=map_location)
    meta = blob["meta"]
    method = build_method(meta.get("build_method", meta["method"]), InputSpec(**meta["spec"]),
                          meta["model_cfg"], meta["method_cfg"])
    method.load_state_dict(blob["state_dict"])
    method.eval()
    return (method.encoder if encoder_only else method), meta


@dataclass
class _Run:
    """Everything one pretraining run carries from step to step (what ``last.pt`` saves)."""
    method: nn.Module
    model: nn.Module                  # ``method``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: BucketBatchSampler
    generator: torch.Generator
    config: dict[str, Any]            # what the run hash covers
    rhash: str
    device: torch.device
    rank: int
    world: int
    ckpt_path: Path
    total_steps: int
    step: int = 0
    elapsed: float = 0.0              # seconds in training steps, summed over resumed runs
    tokens_seen: int = 0
    last_loss: float | None = None
    resumed_from: int | None = None
    saved_step: int | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def last_good(self) -> str:
        if self.saved_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.ckpt_path} (step {self.saved_step})"


def _setup(method: nn.Module, corpus: Encoded, train_cfg: dict[str, Any], max_len: int, out_dir: Path, seed: int,
           device: torch.device | str | None, threads: int | None, model_cfg: dict[str, Any] | None,
           method_cfg: dict[str, Any] | None, data_cfg: dict[str, Any] | None = None) -> _Run:
    """Seeds, device, run hash, optimizer, schedule, sampler and generator of a fresh run."""
    dctx = ddp_util.current()
    rank, world = (dctx.rank, dctx.world_size) if dctx is not None else (0, 1)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if rank == 0:
        remove_stale_tmp(ckpt_path)
        remove_stale_tmp(out_dir / MODEL_NAME)
    device = pick_device(device)
    seed_everything(ddp_util.rank_seed(seed, rank), threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model_cfg = dict(model_cfg if model_cfg is not None else getattr(method, "model_cfg", {}) or {})
    if method_cfg is None:
        method_cfg = getattr(method, "method_cfg", None) or getattr(method, "cfg", None) or {}
    total_steps = int(train_cfg["steps"])
    config = _run_config(method, corpus.spec(max_len), train_cfg, max_len, seed, model_cfg, dict(method_cfg),
                         len(corpus), world, data_cfg)

    method.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(method, float(train_cfg["weight_decay"])),
                                  lr=float(train_cfg["lr"]), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(train_cfg["warmup_steps"]), total_steps))
    sampler = BucketBatchSampler(corpus.lengths(), int(train_cfg["batch_size"]), seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(ddp_util.rank_seed(seed, rank))
    return _Run(method, method, optimizer, scheduler, sampler, generator, config, run_hash(config), device,
                rank, world, ckpt_path, total_steps)


def _resume(run: _Run) -> None:
    """Load ``last.pt`` when there is one (same run hash, or refused), on every rank."""
    if run.ckpt_path.exists():
        state = load_checkpoint(run.ckpt_path, run.rhash, expected_config=run.config)
        run.method.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.sampler.load_state_dict(state["sampler"])
        own = state["rank_states"][run.rank] if run.world > 1 else state
        run.generator.set_state(own["generator"])
        set_rng_state(own["rng"])
        run.step, run.elapsed, run.tokens_seen = state["step"], state["elapsed_s"], state["tokens"]
        run.last_loss = state["last_loss"]
        run.log_lines = state["log"].splitlines()
        run.resumed_from = run.saved_step = run.step
        if run.main:
            print(f"resuming from {run.ckpt_path} at step {run.step} of {run.total_steps}", file=sys.stderr, flush=True)
    if run.world > 1:
        steps = ddp_util.all_gather_object(run.step)
        if len(set(steps)) != 1:
            raise RuntimeError(f"ranks resumed from different steps {steps} of {run.ckpt_path}; is the folder shared?")


def _checkpoint(run: _Run) -> None:
    """Write ``last.pt`` (rank 0; every rank's generator states gathered into it)."""
    own = {"generator": run.generator.get_state(), "rng": rng_state()}
    # every rank takes part in the gather; rank 0 alone writes
    rank_states = ddp_util.all_gather_object(own) if run.world > 1 else None
    if run.main:
        state = {
            "run_hash": run.rhash, "method": run.method.name, "config": run.config, "step": run.step,
            "model": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state_dict(), **own,
            "elapsed_s": run.elapsed, "tokens": run.tokens_seen, "last_loss": run.last_loss,
            "log": "".join(f"{line}\n" for line in run.log_lines),
        }
        if rank_states is not None:
            state["rank_states"] = rank_states
        save_checkpoint(run.ckpt_path, state)
    if run.world > 1:
        ddp_util.barrier()  # no rank runs ahead of (or returns before) the checkpoint it may resume from
    run.saved_step = run.step


def _step(run: _Run, corpus: Encoded, max_len: int, grad_clip: float | None) -> tuple[dict[str, Any], int]:
    """One optimizer step on the next global batch; returns the step's statistics and its number of
    non-padding tokens (timing is added by :func:`_log`)."""
    idx, weight = run.sampler.next_batch(), 1.0
    n_global = len(idx)
    if run.world > 1:
        idx, weight = ddp_util.shard(idx, run.rank, run.world)
    batch = corpus.batch(idx, max_len)                                   # x: [B, N] (or [B, N, d_raw])
    n_tokens = int(batch.n_valid.sum()) if weight > 0 else 0
    batch = batch.to(run.device)
    lr = run.optimizer.param_groups[0]["lr"]
    with autocast(run.device):
        out = run.model(batch, generator=run.generator, step=run.step)
    loss_value = float(out.loss.detach())
    loss = out.loss
    if run.world > 1:
        local_sum = loss_value * len(idx) if weight > 0 else 0.0  # a weight-0 stand-in sample adds nothing
        total, n_tokens = ddp_util.all_reduce_sum([local_sum, float(n_tokens)], run.device)
        loss_value, n_tokens = total / n_global, int(n_tokens)
        if weight != 1.0:
            loss = loss * weight
    if not math.isfinite(loss_value):
        raise TrainingDiverged(f"loss is {loss_value} at step {run.step + 1}; {run.last_good()}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if grad_clip:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.method.parameters(), float(grad_clip)))
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"gradient norm is {grad_norm} at step {run.step + 1}; {run.last_good()}")
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    run.last_loss = loss_value
    run.tokens_seen += n_tokens
    stats = {k: float(v) for k, v in out.stats.items()}
    return {"lr": lr, "grad_norm": grad_norm, **stats}, n_tokens


def _log(run: _Run, stats: dict[str, Any], n_tokens: int, dt: float, log) -> None:
    """One ``log.jsonl`` line: kept for the checkpoint and appended to the file (rank 0)."""
    rec = {"step": run.step, "loss": run.last_loss, "lr": stats["lr"], "mask_ratio": stats.get("mask_ratio"),
           "tokens_per_s": n_tokens / dt if dt > 0 else None, "elapsed_s": run.elapsed, "grad_norm": stats["grad_norm"]}
    rec.update((k, v) for k, v in stats.items() if k not in rec)
    run.log_lines.append(json.dumps(rec))
    if log is not None:
        log.write(run.log_lines[-1] + "\n")
        log.flush()


def pretrain(method: nn.Module, corpus: Encoded, train_cfg: dict[str, Any], max_len: int, out_dir: str | Path,
             seed: int, device: torch.device | str | None = None, threads: int | None = None, *,
             model_cfg: dict[str, Any] | None = None, method_cfg: dict[str, Any] | None = None,
             stop_after: int | None = None, progress: bool = True,
             final_meta: Callable[[nn.Module], dict[str, Any]] | None = None,
             data_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain ``method`` on ``corpus`` for ``train_cfg['steps']`` steps; return a summary.

    ``model_cfg`` / ``method_cfg`` are the arguments ``method`` was built with (defaults: the
    method's ``model_cfg`` and ``method_cfg`` or ``cfg`` attributes); they go into the run hash and
    ``model.pt``, from which :func:`load_pretrained` rebuilds the method.
    ``stop_after``: leave after this many steps in total, with a checkpoint and no ``model.pt``
    (a time-sliced job, or a test of resuming). ``final_meta(method)``: extra metadata computed
    from the trained method just before ``model.pt`` is written (the held-out diagnostic).
    ``data_cfg``: the settings that chose ``corpus``'s rows (e.g. the held-out slice kept out of it),
    added to the run hash so a ``last.pt`` trained on other rows is refused, not resumed.

    ``wall_time_s`` in the summary and in ``model.pt`` is the time spent in training steps, summed
    over resumed runs (checkpoint writing excluded); ``tokens_per_s`` counts non-padding tokens.

    Data-parallel when a torch.distributed process group of several ranks is initialized (see the
    module docstring); ``device`` is then this rank's device.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path, log_path = out_dir / MODEL_NAME, out_dir / LOG_NAME
    run = _setup(method, corpus, train_cfg, max_len, out_dir, seed, device, threads, model_cfg, method_cfg, data_cfg)
    _resume(run)
    # the log is rewritten from the checkpoint: no steps past it, none missing if the file was deleted
    if run.main:
        _write_log(log_path, run.log_lines)
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.model = DistributedDataParallel(method, device_ids=[run.device.index] if run.device.type == "cuda" else None)

    checkpoint_every = int(train_cfg.get("checkpoint_every") or run.total_steps or 1)
    grad_clip = train_cfg.get("grad_clip")
    end = run.total_steps if stop_after is None else min(run.total_steps, stop_after)
    bar = tqdm(total=run.total_steps, initial=run.step, file=sys.stderr, desc=f"pretrain {method.name}",
               disable=not (progress and run.main), mininterval=1.0, dynamic_ncols=True)
    log = log_path.open("a", encoding="utf-8") if run.main else None
    try:
        t_prev = time.perf_counter()
        while run.step < end:
            stats, n_tokens = _step(run, corpus, max_len, grad_clip)
            t_now = time.perf_counter()
            dt, t_prev = t_now - t_prev, t_now
            run.elapsed += dt
            _log(run, stats, n_tokens, dt, log)
            bar.update(1)
            bar.set_postfix(loss=f"{run.last_loss:.4f}", refresh=False)
            if run.step % checkpoint_every == 0 or run.step == end:
                _checkpoint(run)
                t_prev = time.perf_counter()  # checkpoint time is not training time
    finally:
        if log is not None:
            log.close()
        bar.close()

    elapsed = run.elapsed
    summary = {
        "method": method.name, "steps": run.step, "final_loss": run.last_loss, "wall_time_s": elapsed,
        "tokens_per_s": run.tokens_seen / elapsed if elapsed > 0 else None, "tokens": run.tokens_seen,
        "peak_memory_bytes": peak_memory_bytes(run.device), "device": str(run.device), "run_hash": run.rhash,
        "resumed_from": run.resumed_from, "finished": run.step >= run.total_steps, "world_size": run.world,
    }
    if run.step >= run.total_steps and run.main:
        meta = {**run.config, "domain_agnostic": bool(getattr(method, "domain_agnostic", True)),
                "steps": run.step, "run_hash": run.rhash, **{k: summary[k] for k in
                ("final_loss", "wall_time_s", "tokens_per_s", "peak_memory_bytes", "device")},
                "torch_version": str(torch.__version__)}
        if final_meta is not None:
            meta.update(final_meta(method))
            summary.update((k, meta[k]) for k in ("diagnostic",) if k in meta)
        save_model_file(model_path, method, meta)
    if run.world > 1:
        ddp_util.barrier()
    return summary

