"""The one data contract between the data layer and the models.

Every sample is `n` tokens of `d_raw` values (DESIGN §4):

* discrete inputs (SMILES, amino-acid strings) are UTF-8 bytes mapped to ids
  ``byte + 1`` so that id 0 is padding; ``vocab_size = 257`` for every dataset,
  which keeps a model pretrained on one corpus usable on every task of its domain;
* continuous inputs (HIGGS) are one token per feature with ``d_raw = 1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

PAD_ID = 0
BYTE_VOCAB_SIZE = 257  # pad + 256 byte values


@dataclass(frozen=True)
class InputSpec:
    kind: Literal["discrete", "continuous"]
    max_len: int                 # n: tokens per sample after truncation
    vocab_size: int = BYTE_VOCAB_SIZE  # discrete only
    d_raw: int = 1               # continuous only: values per token


@dataclass
class Batch:
    x: Tensor             # discrete: [B, N] long ids (0 = pad); continuous: [B, N, d_raw] float
    padding_mask: Tensor  # [B, N] bool, True where the position is padding

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.x.to(device, non_blocking=True), self.padding_mask.to(device, non_blocking=True))

    @property
    def n_valid(self) -> Tensor:  # [B] long
        return (~self.padding_mask).sum(-1)
