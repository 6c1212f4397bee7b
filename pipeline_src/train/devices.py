"""Device choice, mixed precision and seeding for training jobs.

The device is, in order: the ``requested`` argument, the ``MASKBENCH_DEVICE`` environment
variable (``cpu``, ``cuda``, ``cuda:1``, ...), CUDA when available, else the CPU. When several
jobs share a machine, each job gets its own GPU through ``CUDA_VISIBLE_DEVICES`` or
``MASKBENCH_DEVICE`` (Snakemake does not assign device ids).
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import ContextManager

import numpy as np
import torch

DEVICE_ENV = "MASKBENCH_DEVICE"


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    choice = requested if requested is not None else os.environ.get(DEVICE_ENV) or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested (argument or ${DEVICE_ENV}) but CUDA is not available")
    return device


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA; full fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); optionally fix the intra-op thread count.

    ``deterministic`` selects deterministic kernels where torch has them and only warns where it
    has none (``warn_only``), so no method fails for lack of a deterministic kernel. On the CPU a
    run with a fixed thread count is then bit-reproducible.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by cuBLAS for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max allocated on ``device`` since start; CPU: max resident set size of this process."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux
