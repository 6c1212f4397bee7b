"""SMA masks drawn from pretrained weights (the ``masks`` step), for the report's mask figures (SMA
Fig. 2 / Table 7): ``data/masks/<corpus>/<method>.json``, which the report reads
(``pipeline_src/report/masks.py``: ``MaskDraws.from_json``) and draws.

Two draws from the same weights differ only in the random query subset; what stays masked in
both is what the first layer's attention groups together.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ..atomic import write_json_atomic
from ..data.encode import Encoded, load_encoded, table_files
from ..methods.sma import select_mask
from .loop import load_pretrained


def head_samples(processed_dir: str | Path, n: int) -> Encoded:
    """The first ``n`` samples of a prepared dataset (the test fold when it has one), read cheaply."""
    d = Path(processed_dir)
    if (d / "standardize.json").exists():
        data = load_encoded(d, fold="test")
        if len(data) == 0:
            data = load_encoded(d)
        return data.subset(np.arange(min(n, len(data))))
    t = pq.read_table(table_files(d)[0], columns=["id", "tokens"]).slice(0, n)
    col = t.column("tokens").combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    tokens = col.values.to_numpy()[offsets[0]:offsets[-1]]
    return Encoded("discrete", t.column("id").to_numpy(zero_copy_only=False), tokens=tokens,
                   offsets=offsets - offsets[0])


def token_labels(x: torch.Tensor, n_valid: torch.Tensor, kind: str, feature_names: list[str] | None) -> list[list[str]]:
    out = []
    for b in range(x.shape[0]):
        n = int(n_valid[b])
        if kind == "discrete":
            out.append([chr(int(i) - 1) if 32 <= int(i) - 1 < 127 else "?" for i in x[b, :n].tolist()])
        else:
            out.append(list(feature_names or [str(j) for j in range(n)])[:n])
    return out


@torch.no_grad()
def sma_masks(model_path: str | Path, processed_dir: str | Path, corpus: str, n_samples: int = 64,
              draws: int = 2, seed: int = 0) -> dict:
    """``draws`` SMA masks for the first ``n_samples`` samples, from one ``model.pt`` of an SMA-style
    method (its ``mask_ratio`` and ``num_per_query``), as JSON: corpus, kind, labels (per sample,
    the token labels), lengths, ratio, feature_names, masks (per draw and sample, the masked
    positions)."""
    method, meta = load_pretrained(model_path)
    cfg = getattr(method, "cfg", {}) or {}
    ratio = float(cfg.get("mask_ratio", (float(cfg.get("ratio_min", 0.3)) + float(cfg.get("ratio_max", 0.3))) / 2))
    npq = float(cfg.get("num_per_query", 4))
    data = head_samples(processed_dir, n_samples)
    batch = data.batch(np.arange(len(data)), int(meta["max_len"]))
    enc = method.encoder
    x_emb = enc.embed(batch)
    pad = batch.padding_mask
    logits = enc.first_layer_logits(x_emb, pad)                      # [B, H, Q, N]
    qpad = pad if enc.self_attention else None
    masks = []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        masks.append(select_mask(logits, pad, ratio, npq, g, query_padding_mask=qpad).numpy())
    names = None
    stats = Path(processed_dir) / "standardize.json"
    if stats.exists():
        names = list(json.loads(stats.read_text())["features"])
    n_valid = batch.n_valid
    labels = token_labels(batch.x, n_valid, data.kind, names)
    return {"corpus": corpus, "kind": data.kind, "labels": labels, "ratio": ratio,
            "lengths": n_valid.tolist(), "feature_names": names,
            "masks": [[np.flatnonzero(row).tolist() for row in m] for m in masks]}


def write_masks(model_path: str | Path, processed_dir: str | Path, corpus: str, out: str | Path, **kw) -> Path:
    """Draw the masks of one checkpoint and write them as JSON (atomically)."""
    return write_json_atomic(out, sma_masks(model_path, processed_dir, corpus, **kw))

