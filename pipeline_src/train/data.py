"""Seeded, resumable, length-bucketed batches over an encoded corpus.

Each epoch is a fresh permutation of the corpus, cut into chunks of ``bucket_batches`` batches;
samples are sorted by length inside a chunk, cut into batches, and the batches of the epoch are
shuffled. Batches are then padded (by :meth:`Encoded.batch`) to the longest of their own samples,
which are of similar length, never to a global maximum. Every sample is used exactly once per
epoch (the last batch of an epoch may be smaller).

The order is a pure function of ``(seed, epoch)``, so the state ``{seed, epoch, position}`` is all a
checkpoint needs for a resumed run to see the same batches.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..data.encode import Encoded


def subsample_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` samples drawn without replacement (all when ``size`` is
    ``None`` or at least ``n``); the same for the same ``(n, size, seed)``."""
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    if size <= 0:
        raise ValueError(f"subsample size must be positive, got {size}")
    rng = np.random.default_rng([seed, 0x5EB5A])
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def subsample(corpus: Encoded, size: int | None, seed: int) -> Encoded:
    idx = subsample_indices(len(corpus), size, seed)
    return corpus if len(idx) == len(corpus) else corpus.subset(idx)


class BucketBatchSampler:
    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, bucket_batches: int = 50) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("cannot sample batches from an empty corpus")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.bucket_batches = int(bucket_batches)
        self.seed = int(seed)
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All batches of ``epoch``, in order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.bucket_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), chunk):
            part = perm[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size))
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
        self._cache = (epoch, batches)
        return batches

    def next_batch(self) -> np.ndarray:
        batches = self.epoch_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.epoch_batches(self.epoch)
        idx = batches[self.position]
        self.position += 1
        return idx

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "batch_size": self.batch_size, "bucket_batches": self.bucket_batches,
                "num_samples": len(self.lengths)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("batch_size", "bucket_batches", "num_samples"):
            mine = self.state_dict()[key]
            if int(state[key]) != mine:
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler has {mine}")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
