"""Training-ready arrays: the encoded form every model reads (DESIGN §4).

On disk (written by :mod:`pipeline_src.data.prepare`):

* discrete datasets (SMILES, proteins): a ``tokens`` column, ``list<uint8>``, holding the
  UTF-8 bytes of the canonical input; ids are ``byte + 1`` so that 0 is padding
  (the same vocabulary for every dataset, saved as ``vocab.json`` beside the data);
* continuous datasets (HIGGS): float32 feature columns listed in ``standardize.json``,
  standardized here with the train-fold statistics saved there.

A dataset is either ``table.parquet`` or, for large corpora, ``shards/part-*.parquet``
read in name order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..batch import BYTE_VOCAB_SIZE, PAD_ID, Batch, InputSpec

VOCAB = {
    "scheme": "utf8-bytes",
    "pad_id": PAD_ID,
    "id_of_byte": "byte + 1",
    "vocab_size": BYTE_VOCAB_SIZE,
}


def table_files(processed_dir: str | Path) -> list[Path]:
    d = Path(processed_dir)
    if (d / "table.parquet").exists():
        return [d / "table.parquet"]
    shards = sorted((d / "shards").glob("part-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{d}: no table.parquet and no shards/part-*.parquet")
    return shards


@dataclass
class Encoded:
    kind: Literal["discrete", "continuous"]
    ids: np.ndarray                  # [n] str
    tokens: np.ndarray | None = None  # discrete: flat uint8 bytes of all samples
    offsets: np.ndarray | None = None  # discrete: [n + 1] int64; sample i = tokens[offsets[i]:offsets[i+1]]
    values: np.ndarray | None = None  # continuous: [n, F] float32, standardized

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:  # [n] int64
        if self.kind == "discrete":
            return np.diff(self.offsets)
        return np.full(len(self), self.values.shape[1], dtype=np.int64)

    def spec(self, max_len: int) -> InputSpec:
        if self.kind == "discrete":
            return InputSpec("discrete", max_len=max_len)
        return InputSpec("continuous", max_len=self.values.shape[1], d_raw=1)

    def subset(self, idx: np.ndarray) -> "Encoded":
        idx = np.asarray(idx, dtype=np.int64)
        if self.kind == "continuous":
            return Encoded("continuous", self.ids[idx], values=self.values[idx])
        lens = np.diff(self.offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        # token positions of the kept samples, in order: start of each sample + 0..len-1
        gather = np.repeat(self.offsets[idx] - offsets[:-1], lens) + np.arange(offsets[-1])
        return Encoded("discrete", self.ids[idx], tokens=self.tokens[gather], offsets=offsets)

    def batch(self, idx: np.ndarray, max_len: int) -> Batch:
        """Pad the samples ``idx`` to the longest of them (at most ``max_len``; longer inputs are
        truncated to their first ``max_len`` tokens)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.kind == "continuous":
            x = torch.from_numpy(np.ascontiguousarray(self.values[idx], dtype=np.float32)).unsqueeze(-1)  # [B, F, 1]
            return Batch(x, torch.zeros(x.shape[:2], dtype=torch.bool))
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lens = np.minimum(ends - starts, max_len)
        n = int(lens.max()) if len(idx) else 0
        x = np.zeros((len(idx), n), dtype=np.int64)
        cols = np.arange(n)
        valid = cols[None, :] < lens[:, None]  # [B, N]
        src = (starts[:, None] + cols[None, :])[valid]
        x[valid] = self.tokens[src].astype(np.int64) + 1
        return Batch(torch.from_numpy(x), torch.from_numpy(~valid))


def load_encoded(processed_dir: str | Path, fold: str | None = None) -> Encoded:
    """Read a prepared dataset into training-ready arrays (no per-step tokenization).

    ``fold``: keep only the rows of that fold when the table has a ``fold`` column (a labelled
    task used as a pretraining corpus, e.g. HIGGS, is pretrained on its train fold only).
    """
    d = Path(processed_dir)
    files = table_files(d)
    if fold is not None and "fold" in pq.read_schema(files[0]).names:
        t = pa.concat_tables([pq.read_table(f, columns=["fold"]) for f in files])
        keep = np.flatnonzero(t.column("fold").to_numpy(zero_copy_only=False) == fold)
        return load_encoded(d).subset(keep)
    stats_path = d / "standardize.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        feats = stats["features"]
        t = pa.concat_tables([pq.read_table(f, columns=["id", *feats]) for f in files])
        values = np.stack([t.column(c).to_numpy() for c in feats], axis=1).astype(np.float32)
        mean = np.asarray([stats["mean"][c] for c in feats], dtype=np.float32)
        std = np.asarray([stats["std"][c] for c in feats], dtype=np.float32)
        values = (values - mean) / np.where(std > 0, std, 1.0)
        return Encoded("continuous", t.column("id").to_numpy(zero_copy_only=False), values=values)
    t = pa.concat_tables([pq.read_table(f, columns=["id", "tokens"]) for f in files])
    col = t.column("tokens").combine_chunks()
    if isinstance(col, pa.ChunkedArray):  # empty table
        col = pa.array([], type=pa.list_(pa.uint8()))
    offsets = col.offsets.to_numpy().astype(np.int64)
    tokens = col.values.to_numpy()
    tokens = tokens[offsets[0]:offsets[-1]]
    offsets = offsets - offsets[0]
    return Encoded("discrete", t.column("id").to_numpy(zero_copy_only=False), tokens=tokens, offsets=offsets)
