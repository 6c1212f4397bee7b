"""A tiny masked-reconstruction method with the ``Method`` interface, for the training tests.

Run as a script it pretrains on a small synthetic corpus (the subprocess of the kill-and-resume
test): ``python test_train_support.py OUT_DIR STEPS CHECKPOINT_EVERY SLEEP_S``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline_src.batch import Batch, InputSpec
from pipeline_src.data.encode import Encoded


@dataclass
class ToyOutput:
    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


class ToyMethod(nn.Module):
    """Token embedding + positional embedding, a mask token, a per-token MLP that also sees the mean
    of the visible tokens, and a reconstruction head; CE (discrete) or MSE (continuous) on the
    masked positions. Test hooks: ``nan_at_step``, ``sleep_s``."""

    name = "toy"
    domain_agnostic = True

    def __init__(self, spec: InputSpec, model_cfg: dict, method_cfg: dict) -> None:
        super().__init__()
        dim = int(model_cfg.get("dim", 16))
        self.spec, self.model_cfg, self.method_cfg = spec, model_cfg, method_cfg
        self.mask_ratio = float(method_cfg.get("mask_ratio", 0.3))
        self.nan_at_step = method_cfg.get("nan_at_step")
        self.sleep_s = float(method_cfg.get("sleep_s", 0.0))
        if spec.kind == "discrete":
            self.embed, self.head = nn.Embedding(spec.vocab_size, dim), nn.Linear(dim, spec.vocab_size)
        else:
            self.embed, self.head = nn.Linear(spec.d_raw, dim), nn.Linear(dim, spec.d_raw)
        self.pos_embed = nn.Parameter(torch.randn(1, spec.max_len, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1),
                                     nn.Linear(2 * dim, dim))

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> ToyOutput:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        x, pad = batch.x, batch.padding_mask
        b, n = pad.shape
        noise = torch.rand(b, n, generator=generator, device=pad.device)
        mask = (noise < self.mask_ratio) & ~pad
        h = self.embed(x) + self.pos_embed[:, :n]
        h = torch.where(mask[..., None], self.mask_token.expand_as(h), h)
        visible = (~mask & ~pad).float()[..., None]
        context = (h * visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True).clamp(min=1.0)
        out = self.head(self.encoder(h + context))
        if not mask.any():
            loss = out.sum() * 0.0
        elif self.spec.kind == "discrete":
            loss = F.cross_entropy(out[mask].float(), x[mask])
        else:
            loss = F.mse_loss(out[mask].float(), x[mask].float())
        if self.nan_at_step is not None and step == int(self.nan_at_step):
            loss = loss * float("nan")
        n_valid = (~pad).sum().clamp(min=1)
        return ToyOutput(loss, {"mask_ratio": float(mask.sum() / n_valid)})


def toy_corpus(n: int = 240, seed: int = 0, min_len: int = 3, max_len: int = 40) -> Encoded:
    rng = np.random.default_rng(seed)
    lens = rng.integers(min_len, max_len + 1, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = rng.integers(65, 91, size=int(offsets[-1])).astype(np.uint8)  # A-Z
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    return Encoded("discrete", ids, tokens=tokens, offsets=offsets)


MAX_LEN = 32


def train_cfg(steps: int, checkpoint_every: int, **over) -> dict:
    cfg = {"steps": steps, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 3,
           "grad_clip": 1.0, "checkpoint_every": checkpoint_every}
    cfg.update(over)
    return cfg


def make_method(corpus: Encoded, seed: int = 0, **method_cfg) -> ToyMethod:
    torch.manual_seed(seed)
    return ToyMethod(corpus.spec(MAX_LEN), {"dim": 16}, {"mask_ratio": 0.3, **method_cfg})


if __name__ == "__main__":
    from pipeline_src.train.loop import pretrain

    out_dir, steps, every, sleep_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    corpus = toy_corpus()
    method = make_method(corpus)
    method.sleep_s = sleep_s  # not part of the method config: the run hash stays that of the in-process runs
    pretrain(method, corpus, train_cfg(steps, every), MAX_LEN, out_dir, seed=0, device="cpu", threads=1,
             model_cfg=method.model_cfg, method_cfg=method.method_cfg, progress=False)
