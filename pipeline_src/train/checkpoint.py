"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

Everything stored is a tensor, dict, list, int, float, str, bool or None; random-number-generator
states are stored as tensors. A checkpoint records the hash of the run it belongs to (method and
configuration, see :func:`run_hash`); resuming under another hash is refused, and the message
names the method and the configuration keys that differ.

Integrity: :func:`atomic_save` records in every dict it writes (under :data:`DIGEST_KEY`) the
sha256 of the content — every tensor's dtype, shape and bytes and every other value, in key
order — computed when the file is written. :func:`load_verified` (used for ``model.pt``) and
:func:`load_checkpoint` (``last.pt``) recompute it after loading and refuse a file whose content
does not match, or that records none (a file not written by this package).
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
DIGEST_KEY = "content_sha256"


class CheckpointMismatch(RuntimeError):
    """A checkpoint belongs to another method or configuration."""


class CheckpointCorrupt(RuntimeError):
    """A checkpoint's content does not match the sha256 recorded when it was written (or it
    records none, or it cannot be loaded at all)."""


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Update ``h`` with a canonical, type-tagged serialization of ``obj``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} for a checkpoint")


def content_sha256(obj: Any) -> str:
    """sha256 of the content of a checkpoint object (the :data:`DIGEST_KEY` entry excluded)."""
    if isinstance(obj, dict) and DIGEST_KEY in obj:
        obj = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def load_verified(path: str | Path, map_location: str | torch.device = "cpu", *, require_digest: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` and check the recorded content sha256.

    Raises :class:`CheckpointCorrupt` when the file cannot be loaded, records no digest (unless
    ``require_digest`` is false) or its content differs from what was written.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unsafe pickle: all refused alike
        raise CheckpointCorrupt(f"{path}: cannot be loaded as a weights-only checkpoint "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                f"delete it and rerun the step that writes it") from None
    recorded = obj.get(DIGEST_KEY) if isinstance(obj, dict) else None
    if recorded is None:
        if require_digest:
            raise CheckpointCorrupt(f"{path}: records no content sha256, so it was not written by this "
                                    f"package (or by an older version); refusing to use it. Delete it and rerun "
                                    f"the step that writes it")
        return obj
    got = content_sha256(obj)
    if got != recorded:
        raise CheckpointCorrupt(f"{path}: content sha256 {got[:16]}… differs from the {recorded[:16]}… recorded "
                                f"when it was written: the file was modified or damaged; delete it and rerun "
                                f"the step that writes it")
    del obj[DIGEST_KEY]
    return obj


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: obj}


def config_differences(stored: Any, expected: Any, limit: int = 8) -> list[str]:
    """``key: stored -> expected`` for every differing leaf of two nested config dicts."""
    a = _flat(stored if isinstance(stored, dict) else {})
    b = _flat(expected if isinstance(expected, dict) else {})
    missing = object()
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            sa = "(absent)" if va is missing else repr(va)
            sb = "(absent)" if vb is missing else repr(vb)
            diffs.append(f"{k}: {sa} -> {sb}")
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"... and {len(diffs) - limit} more"]
    return diffs


def run_hash(payload: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A dict gets its content sha256 recorded under :data:`DIGEST_KEY` (the caller's dict is not
    modified).
    """
    path = Path(path)
    if isinstance(obj, dict):
        try:
            digest = content_sha256(obj)
        except TypeError:  # a value weights_only loading could not read anyway: saved without a digest
            digest = None
        obj = {k: v for k, v in obj.items() if k != DIGEST_KEY}
        if digest is not None:
            obj[DIGEST_KEY] = digest
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


def load_checkpoint(path: str | Path, expected_hash: str | None = None, map_location: str | torch.device = "cpu",
                    expected_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``, content sha256 checked); refuse one whose
    ``run_hash`` differs, naming the method and (given ``expected_config``) the differing keys."""
    state = load_verified(path, map_location=map_location)
    if expected_hash is not None and state.get("run_hash") != expected_hash:
        stored_cfg = state.get("config") if isinstance(state.get("config"), dict) else None
        what = ""
        if expected_config is not None:
            stored_method, method = state.get("method"), expected_config.get("method")
            if stored_method != method:
                what = f" It was written by method {stored_method!r}, this run is method {method!r}."
            if stored_cfg is not None:
                diffs = [d for d in config_differences(stored_cfg, expected_config) if not d.startswith("method:")]
                if diffs:
                    what += " Configuration differences (checkpoint -> this run): " + "; ".join(diffs) + "."
            elif not what:
                what = " The checkpoint does not record its configuration."
        raise CheckpointMismatch(
            f"{path}: checkpoint belongs to another run (method {state.get('method')!r}, hash "
            f"{state.get('run_hash')}) than this one (hash {expected_hash}); the method or its "
            f"configuration changed.{what} Delete {path} to start this run from scratch."
        )
    return state
