"""Multi-process data-parallel pretraining with torch.distributed (launched by ``torchrun``).

``torchrun --nproc_per_node 4 -m pipeline_src pretrain ...`` starts four processes with
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set; :func:`setup` then joins the process group
(``nccl`` on GPUs, ``gloo`` on the CPU; ``$MASKBENCH_DIST_BACKEND`` overrides) and the training
loop wraps the model in ``DistributedDataParallel``. Without those variables (or with a world of
one) nothing here is used and a run is the plain single-process one.

Data: every rank draws the same global batch from an identically seeded sampler and keeps its own
slice (:func:`shard`), so the ranks together see exactly the batches of a single-process run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .devices import pick_device

BACKEND_ENV = "MASKBENCH_DIST_BACKEND"


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun / SLURM launchers (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_distributed_launch() -> bool:
    return launched_world_size() > 1


def current() -> DistContext | None:
    """The active process group as a :class:`DistContext`, or ``None`` for a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       str(dist.get_backend()))


def setup(requested_device: str | None = None) -> tuple[DistContext | None, torch.device]:
    """Join the process group when launched with a world of several processes; return it and the
    device this rank trains on (``cuda:LOCAL_RANK`` with NCCL). Single process: ``(None, device)``."""
    if not is_distributed_launch():
        return None, pick_device(requested_device)
    ctx = current()
    if ctx is not None:  # already joined (e.g. by a test harness)
        return ctx, _rank_device(requested_device, ctx.backend, ctx.local_rank)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = os.environ.get(BACKEND_ENV) or None
    if backend is None:
        want_cuda = (requested_device or os.environ.get("MASKBENCH_DEVICE") or "").startswith("cuda") or (
            not requested_device and not os.environ.get("MASKBENCH_DEVICE") and torch.cuda.is_available())
        backend = "nccl" if want_cuda and torch.cuda.is_available() else "gloo"
    device = _rank_device(requested_device, backend, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return current(), device


def _rank_device(requested: str | None, backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("the nccl backend needs CUDA; use MASKBENCH_DIST_BACKEND=gloo on CPUs")
        # one GPU per rank; with one visible device per process (SLURM --gpus-per-task) that is cuda:0
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    device = pick_device(requested or "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, float]:
    """This rank's contiguous slice of a global batch and the weight of its loss.

    The weight ``world_size * len(slice) / len(batch)`` makes DDP's average of the ranks'
    gradients equal to the sample-weighted mean, also when the slices differ in size (the last
    batch of an epoch); it is exactly 1 when they are equal. A rank left without a sample (a batch
    smaller than the world) runs its first sample with weight 0, so it still joins the all-reduce.
    """
    part = np.array_split(np.asarray(indices), world_size)[rank]
    if len(part) == 0:
        return np.asarray(indices)[:1], 0.0
    return part, world_size * len(part) / len(indices)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over the ranks (one collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_object(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed``; the other ranks draw their own masks and dropout."""
    return seed if rank == 0 else seed + 1_000_003 * rank
