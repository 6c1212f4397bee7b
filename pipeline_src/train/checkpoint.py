"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

Everything stored is a tensor, dict, list, int, float, str, bool or None; random-number-generator
states are stored as tensors. A checkpoint records the hash of the run it belongs to (method and
configuration, see :func:`run_hash`); resuming under another hash is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

TMP_SUFFIX = ".tmp"


class CheckpointMismatch(RuntimeError):
    """A checkpoint belongs to another method or configuration."""


def run_hash(payload: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_tmp(path: str | Path) -> None:
    """Delete temporary files a killed :func:`atomic_save` of ``path`` left behind."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


# --- random-number-generator states as tensors ---------------------------------------------

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically; ``state`` must hold ``run_hash``."""
    if "run_hash" not in state:
        raise KeyError("a checkpoint must record the run_hash it belongs to")
    atomic_save(state, path)


def load_checkpoint(path: str | Path, expected_hash: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``); refuse one whose ``run_hash`` differs."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if expected_hash is not None and state.get("run_hash") != expected_hash:
        raise CheckpointMismatch(
            f"{path}: checkpoint belongs to another run (method {state.get('method')!r}, hash "
            f"{state.get('run_hash')}) than this one (hash {expected_hash}); the method or its "
            f"configuration changed. Delete {path} to start this run from scratch."
        )
    return state
