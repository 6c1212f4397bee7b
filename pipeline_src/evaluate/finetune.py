"""Finetune protocol (SMA): encoder + head trained end to end with AdamW, early stopping on the
validation fold, the best-on-valid weights scored once on test.

The learning rate follows a linear warm-up over ``warmup_frac`` of the planned steps (epochs x
batches per epoch), then ``schedule``: ``constant``, ``cosine`` or ``linear`` decay to zero at the
planned end (early stopping may end a run before). ``lrs`` is an optional small grid: every
learning rate is trained from the same pretrained weights and seed, and the one whose best epoch
scores best on valid wins (the first listed on a tie). The test fold is read once, after every
choice is made; the target scaling (regression) and the number of classes come from the train
(and valid) rows only. On CUDA the forward passes run under bf16 autocast, as in pretraining.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.encode import Encoded
from ..spec import FinetuneSpec
from ..train.data import BucketBatchSampler
from ..train.devices import autocast
from ..train.loop import warmup_cosine
from .linear import ProbeResult
from .metrics import is_better, mean_metric, task_metrics

SCHEDULES = ("constant", "cosine", "linear")
Curve = list[dict[str, float]]  # [{epoch, train_loss, valid}] per epoch run


class Head(nn.Module):
    def __init__(self, encoder: nn.Module, dim: int, out: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out))

    def forward(self, batch) -> torch.Tensor:
        enc = self.encoder.encode(batch)
        return self.head(self.encoder.pool(enc.h, enc.padding_mask))  # [B, out]


@dataclass
class Targets:
    y: torch.Tensor                                     # [n] what the loss sees (all rows; only train rows are read)
    out_dim: int
    decode: Callable[[torch.Tensor], torch.Tensor]      # model output [B, out] -> what the metric sees [B]


@dataclass
class FinetuneResult(ProbeResult):
    """:class:`ProbeResult` plus the chosen run's per-epoch curve, the lr grid and the model."""
    curve: Curve = field(default_factory=list)                   # of the chosen lr
    chosen: dict[str, float] = field(default_factory=dict)       # {lr, epoch}
    grid: list[dict[str, Any]] = field(default_factory=list)     # per lr: {lr, valid, epoch, epochs_run}
    model: nn.Module | None = None                               # Head with the chosen weights, eval mode


def make_targets(y: np.ndarray, fold: np.ndarray, task: str, metric: str) -> Targets:
    """Loss targets and the output decoder. Regression targets are standardized with the train
    rows' mean and std and decoded back to label units; classes count the train and valid labels."""
    train = fold == "train"
    if y.ndim == 2:  # several label columns [n, T], NaN = missing (masked in task_loss)
        return _multi_targets(y, train, task, metric)
    if task == "regression":
        mu, sd = float(y[train].mean()), float(y[train].std() or 1.0)
        return Targets(torch.tensor((y - mu) / sd, dtype=torch.float32), 1, lambda o: o[:, 0] * sd + mu)
    if task == "binary":
        return Targets(torch.tensor(y, dtype=torch.float32), 1,
                       (lambda o: torch.sigmoid(o[:, 0])) if metric == "roc_auc" else (lambda o: (o[:, 0] > 0).long()))
    if task != "multiclass":
        raise ValueError(f"unknown task {task!r} (regression | binary | multiclass)")
    seen = y[(fold == "train") | (fold == "valid")]
    classes = int(seen.max()) + 1
    return Targets(torch.tensor(y, dtype=torch.long), classes, lambda o: o.argmax(-1))


def _multi_targets(y: np.ndarray, train: np.ndarray, task: str, metric: str) -> Targets:
    if task == "multiclass":
        raise ValueError("a multiclass task takes one label column; several are supported for regression and binary tasks")
    if task == "regression":
        mu = np.nanmean(y[train], axis=0)                           # [T]
        sd = np.nanstd(y[train], axis=0)
        sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        mu = np.where(np.isfinite(mu), mu, 0.0)
        mu_t, sd_t = torch.tensor(mu, dtype=torch.float32), torch.tensor(sd, dtype=torch.float32)
        return Targets(torch.tensor((y - mu) / sd, dtype=torch.float32), y.shape[1],
                       lambda o: o * sd_t.to(o.device) + mu_t.to(o.device))
    return Targets(torch.tensor(y, dtype=torch.float32), y.shape[1],
                   torch.sigmoid if metric == "roc_auc" else (lambda o: (o > 0).long()))


def task_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """out: [B, out_dim] logits (float32); y: [B] targets."""
    if y.dim() == 2:  # several tasks: the loss over the present labels only
        present = ~torch.isnan(y)                                   # [B, T]
        if not present.any():
            return out.sum() * 0.0
        if task == "regression":
            return nn.functional.mse_loss(out[present], y[present])
        return nn.functional.binary_cross_entropy_with_logits(out[present], y[present])
    if task == "regression":
        return nn.functional.mse_loss(out[:, 0], y)
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(out[:, 0], y)
    return nn.functional.cross_entropy(out, y)


def lr_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier at step ``s`` (0-based): linear warm-up to 1 over ``warmup_steps``, then
    ``schedule`` down to 0 at ``total_steps`` (``constant`` stays at 1)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"finetune schedule {schedule!r} unknown (known: {', '.join(SCHEDULES)})")
    if schedule == "cosine":
        return warmup_cosine(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        return max(0.0, 1.0 - (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return factor


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, idx: np.ndarray, max_len: int, t: Targets, bs: int,
            device: torch.device | str) -> np.ndarray:
    """Decoded predictions for the rows ``idx``: [len(idx)]."""
    model.eval()
    dev = torch.device(device)
    idx = np.asarray(idx)
    order = np.argsort(data.lengths()[idx], kind="stable")      # similar lengths share a batch: less padding
    preds = []
    for s in range(0, len(idx), bs):
        with autocast(dev):
            out = model(data.batch(idx[order[s:s + bs]], max_len).to(dev))
        preds.append(t.decode(out.double()).cpu().numpy())  # un-scaled in float64
    pred = np.concatenate(preds)
    restored = np.empty_like(pred)
    restored[order] = pred                                       # back in the order of ``idx``
    return restored


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_one_lr(encoder: nn.Module, dim: int, data: Encoded, y: np.ndarray, t: Targets, tr: np.ndarray,
                  va: np.ndarray, task: str, metric: str, cfg: FinetuneSpec, lr: float, max_len: int, seed: int,
                  device: torch.device, log: Callable[[str], None]) -> tuple[Head, dict[str, torch.Tensor], Curve, int]:
    """Train a fresh head on a copy of ``encoder`` at one learning rate; returns the model, the
    state of its best-on-valid epoch, the curve and that epoch (1-based; 0 when the train loss was
    not finite in the first epoch)."""
    torch.manual_seed(seed)  # the head's init and every random draw: the same for every lr
    # batches of similar length (shuffled within length buckets, then in order), as in pretraining:
    # far less padding than random batches of SMILES or sequences of mixed length
    sampler = BucketBatchSampler(data.lengths()[tr], cfg.batch_size, seed)
    model = Head(copy.deepcopy(encoder), dim, t.out_dim).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(cfg.weight_decay))
    bs, epochs = cfg.batch_size, cfg.epochs
    total = epochs * math.ceil(len(tr) / bs)
    warmup = int(round(float(cfg.warmup_frac) * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg.schedule, warmup, total))
    patience = cfg.patience
    yt = t.y.to(device)
    curve: Curve = []
    best, best_state, best_epoch, bad = None, None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        for rows in sampler.epoch_batches(epoch - 1):
            idx = tr[rows]
            batch = data.batch(idx, max_len).to(device)
            with autocast(device):
                out = model(batch)
            loss = task_loss(out.float(), yt[torch.from_numpy(idx).to(device)], task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
        train_loss = float(loss_sum.item()) / len(tr)
        if not math.isfinite(train_loss):
            log(f"lr {lr:g} epoch {epoch}: train loss {train_loss}; this learning rate stops here")
            break
        v = mean_metric(metric, y[va], predict(model, data, va, max_len, t, 2 * bs, device))
        curve.append({"epoch": epoch, "train_loss": train_loss, "valid": v})
        log(f"lr {lr:g} epoch {epoch}: train loss {train_loss:.4f}, valid {metric} {v:.4f}")
        if best is None or is_better(metric, v, best):
            best, best_state, best_epoch, bad = v, _state(model), epoch, 0
        else:
            bad += 1
            if bad >= patience:
                break
    return model, best_state, curve, best_epoch


def finetune(encoder: nn.Module, dim: int, data: Encoded, y: np.ndarray, fold: np.ndarray, task: str, metric: str,
             cfg: FinetuneSpec, max_len: int, seed: int, device: torch.device | str = "cpu",
             log: Callable[[str], None] = print) -> FinetuneResult:
    """Finetune a head on a copy of ``encoder`` at each of ``cfg.learning_rates``; the best on valid
    is scored on test.

    ``data``: [n] samples; ``y``: [n] labels; ``fold``: [n] in {'train', 'valid', 'test'}.
    ``encoder`` is not modified (each learning rate trains a copy)."""
    tr, va, te = (np.flatnonzero(fold == f) for f in ("train", "valid", "test"))
    if not len(tr) or not len(va) or not len(te):
        raise ValueError(f"a split needs train, valid and test rows; got {len(tr)}/{len(va)}/{len(te)}")
    lrs = cfg.learning_rates
    dev = torch.device(device)
    t = make_targets(y, fold, task, metric)
    chosen: tuple[float, float, int, dict[str, torch.Tensor], Curve, Head] | None = None
    grid: list[dict[str, Any]] = []
    for lr in lrs:
        model, state, curve, epoch = _train_one_lr(encoder, dim, data, y, t, tr, va, task, metric, cfg, lr,
                                                   max_len, seed, dev, log)
        if not epoch:
            grid.append({"lr": lr, "valid": None, "epoch": 0, "epochs_run": 0})
            continue
        v = curve[epoch - 1]["valid"]
        grid.append({"lr": lr, "valid": v, "epoch": epoch, "epochs_run": len(curve)})
        if chosen is None or is_better(metric, v, chosen[1]):
            chosen = (lr, v, epoch, state, curve, model)
        del model, state
    if chosen is None:
        raise RuntimeError(f"finetuning diverged in its first epoch at every learning rate ({lrs}): the train loss "
                           "was not finite; lower the learning rate")
    lr, v, epoch, state, curve, model = chosen
    model.load_state_dict(state)
    model.eval()
    pred_te = predict(model, data, te, max_len, t, 2 * cfg.batch_size, dev)
    test = mean_metric(metric, y[te], pred_te)
    hyper = {**{k: val for k, val in cfg.as_dict().items() if k != "lrs"}, "lr": lr, "best_epoch": epoch}
    if len(lrs) > 1:
        hyper["lrs"] = lrs
    return FinetuneResult(test=test, valid=v, hyper=hyper, n={"train": len(tr), "valid": len(va), "test": len(te)},
                          curve=curve, chosen={"lr": lr, "epoch": epoch}, grid=grid, model=model,
                          tasks=_task_scores(metric, y[te], pred_te))


def _task_scores(metric: str, y_te: np.ndarray, pred_te: np.ndarray) -> list[dict] | None:
    """Several label columns: each task's test metric (``skipped`` where it is undefined)."""
    if y_te.ndim == 1:
        return None
    return [{"test": v} if v is not None else {"skipped": "metric undefined on the labelled test rows"}
            for v in task_metrics(metric, y_te, pred_te)]
