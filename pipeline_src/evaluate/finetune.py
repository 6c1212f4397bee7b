"""Finetune protocol (SMA): encoder + head trained end to end, early stopping on the validation
fold, the best-on-valid weights scored once on test."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.encode import Encoded
from .linear import ProbeResult
from .metrics import is_better, mean_metric, task_metrics


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
    y: torch.Tensor        # what the loss sees
    out_dim: int
    decode: Any            # model output -> what the metric sees


def _targets(y: np.ndarray, train: np.ndarray, task: str, metric: str) -> Targets:
    if y.ndim == 2:  # several label columns [n, T], NaN = missing (masked in _loss)
        return _multi_targets(y, train, task, metric)
    if task == "regression":
        mu, sd = float(y[train].mean()), float(y[train].std() or 1.0)
        return Targets(torch.tensor((y - mu) / sd, dtype=torch.float32), 1, lambda o: o[:, 0] * sd + mu)
    if task == "binary":
        return Targets(torch.tensor(y, dtype=torch.float32), 1,
                       (lambda o: torch.sigmoid(o[:, 0])) if metric == "roc_auc" else (lambda o: (o[:, 0] > 0).long()))
    classes = int(y.max()) + 1
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


def _loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
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


@torch.no_grad()
def _predict(model: Head, data: Encoded, idx: np.ndarray, max_len: int, t: Targets, bs: int, device) -> np.ndarray:
    model.eval()
    preds = []
    for s in range(0, len(idx), bs):
        preds.append(t.decode(model(data.batch(idx[s:s + bs], max_len).to(device)).float()).cpu().numpy())
    return np.concatenate(preds)


def finetune(encoder: nn.Module, dim: int, data: Encoded, y: np.ndarray, fold: np.ndarray, task: str, metric: str,
             cfg: dict[str, Any], max_len: int, seed: int, device: torch.device | str = "cpu", log=print) -> ProbeResult:
    """cfg: {epochs, batch_size, lr, weight_decay, patience}."""
    tr, va, te = (np.flatnonzero(fold == f) for f in ("train", "valid", "test"))
    if not len(tr) or not len(va) or not len(te):
        raise ValueError(f"a split needs train, valid and test rows; got {len(tr)}/{len(va)}/{len(te)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t = _targets(y, fold == "train", task, metric)
    model = Head(encoder, dim, t.out_dim).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    best, best_state, best_epoch, bad = None, None, -1, 0
    bs = int(cfg["batch_size"])
    for epoch in range(int(cfg["epochs"])):
        model.train()
        perm = rng.permutation(tr)
        for s in range(0, len(perm), bs):
            idx = perm[s:s + bs]
            batch = data.batch(idx, max_len).to(device)
            loss = _loss(model(batch), t.y[idx].to(device), task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        v = mean_metric(metric, y[va], _predict(model, data, va, max_len, t, 2 * bs, device))
        log(f"epoch {epoch + 1}: valid {metric} {v:.4f}")
        if best is None or is_better(metric, v, best):
            best, best_state, best_epoch, bad = v, copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            bad += 1
            if bad >= int(cfg.get("patience", 10)):
                break
    model.load_state_dict(best_state)
    pred_te = _predict(model, data, te, max_len, t, 2 * bs, device)
    test = mean_metric(metric, y[te], pred_te)
    return ProbeResult(test=test, valid=best, hyper={"best_epoch": best_epoch, **cfg},
                       n={"train": len(tr), "valid": len(va), "test": len(te)}, tasks=_task_scores(metric, y[te], pred_te))


def _task_scores(metric: str, y_te: np.ndarray, pred_te: np.ndarray) -> list[dict] | None:
    """Several label columns: each task's test metric (``skipped`` where it is undefined)."""
    if y_te.ndim == 1:
        return None
    return [{"test": v} if v is not None else {"skipped": "metric undefined on the labelled test rows"}
            for v in task_metrics(metric, y_te, pred_te)]
