"""Atomic file output: write to a temporary name beside the target, then rename.

A reader (or a Snakemake rule checking its outputs) never sees a half-written file, and a
failed step leaves the previous version, or nothing, in place.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS = {"compression": "zstd"}


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Plain (non-atomic) write with the project's options; use inside a staging directory."""
    pq.write_table(table, str(path), **PARQUET_OPTIONS)
    return Path(path)


def write_parquet_atomic(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write_parquet(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def new_stage_dir(target: str | Path) -> Path:
    """A fresh, empty sibling directory of ``target`` to build outputs in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.stage-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    return stage


def commit_stage(stage: Path, target: Path, order: list[str], remove: tuple[str, ...] = (),
                 last: str | None = None) -> None:
    """Move the entries of ``stage`` (files or directories, named in ``order``) into ``target``.

    ``last`` (e.g. ``qc.json``) is removed from ``target`` first and moved in at the end, so its
    presence marks a complete set; names in ``remove`` are deleted from ``target`` (stale outputs
    of another layout). Directories are swapped by renaming: the old one is renamed aside, the
    new one renamed in, the old one deleted.
    """
    target.mkdir(parents=True, exist_ok=True)
    if last is not None and (target / last).exists():
        (target / last).unlink()
    for name in remove:
        p = target / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    names = [n for n in order if n != last] + ([last] if last is not None else [])
    for name in names:
        src, dst = stage / name, target / name
        if not src.exists():
            continue
        if src.is_dir():
            old = None
            if dst.exists():
                old = target / f".{name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(dst, old)
            os.rename(src, dst)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)
