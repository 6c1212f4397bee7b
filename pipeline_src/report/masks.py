"""SMA mask draws as the report reads them (written by the ``masks`` step, pipeline_src/train/masks.py):
the record, its JSON form, and the text views of the report's mask section."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class MaskDraws:
    corpus: str
    kind: str                      # discrete | continuous
    labels: list[list[str]]        # per sample, the token labels (characters or feature names)
    masks: np.ndarray              # [draws, B, N] bool, False beyond a sample's length
    lengths: np.ndarray            # [B]
    ratio: float
    feature_names: list[str] | None = None

    @classmethod
    def from_json(cls, d: dict) -> "MaskDraws":
        lengths = np.asarray(d["lengths"], dtype=np.int64)
        width = int(lengths.max()) if len(lengths) else 0
        masks = np.zeros((len(d["masks"]), len(lengths), width), dtype=bool)
        for k, draw in enumerate(d["masks"]):
            for b, pos in enumerate(draw):
                masks[k, b, pos] = True
        return cls(d["corpus"], d["kind"], d["labels"], masks, lengths, float(d["ratio"]), d.get("feature_names"))


def read_mask_draws(path: str | Path) -> MaskDraws:
    return MaskDraws.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def masked_text(labels: list[str], mask: np.ndarray, hole: str = "_") -> str:
    """The sample with its masked characters replaced by ``hole``."""
    return "".join(hole if mask[i] else c for i, c in enumerate(labels))


def mask_rate_by_label(d: MaskDraws, min_count: int = 5) -> list[tuple[str, float, int]]:
    """(label, fraction of its occurrences masked over all draws, occurrences), most masked first;
    labels seen fewer than ``min_count`` times are left out."""
    hits: dict[str, list[int]] = {}
    for b, labels in enumerate(d.labels):
        for i, lab in enumerate(labels):
            h = hits.setdefault(lab, [0, 0])
            h[0] += int(d.masks[:, b, i].sum())
            h[1] += d.masks.shape[0]
    rows = [(lab, m / c, c // d.masks.shape[0]) for lab, (m, c) in hits.items() if c // d.masks.shape[0] >= min_count]
    return sorted(rows, key=lambda r: (-r[1], r[0]))
