#!/usr/bin/env python
"""Benchmark the preparation of the MOSES corpus and the loading of its encoded form.

    python scripts/bench_prepare.py [INPUT] [--threads 2] [--out DIR] [--chunk-size N]

INPUT defaults to data/raw/moses/train.csv.gz (a mirror copy, e.g.
../shared/datasets/chemistry/pretrain_smiles/moses/train.csv.gz, works too). Prints molecules per
second of ``prepare_dataset`` (targets: >= 6,000/s with 2 processes) and the time of
``load_encoded`` on the result (target: < 5 s). The output goes to a temporary directory that is
removed afterwards unless --out is given.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline_src.data import readers  # noqa: E402
from pipeline_src.data.encode import load_encoded  # noqa: E402  (imports torch before timing)
from pipeline_src.data.prepare import CORPUS_CHUNK, prepare_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", default="data/raw/moses/train.csv.gz")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=CORPUS_CHUNK)
    ap.add_argument("--registry", default=str(REPO / "config" / "datasets.yaml"))
    ap.add_argument("--out", default=None, help="keep the prepared corpus here")
    ap.add_argument("--read-only", action="store_true", help="also time reading the CSV alone")
    args = ap.parse_args(argv)

    src = Path(args.input)
    if not src.exists():
        print(f"{src}: not found", file=sys.stderr)
        return 2
    entry = yaml.safe_load(Path(args.registry).read_text())["datasets"]["moses"]
    entry = {**entry, "files": [{**entry["files"][0], "name": src.name}]}
    tmp = None
    if args.out:
        out = Path(args.out)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
        out = tmp / "moses"
    try:
        if args.read_only:
            t = time.perf_counter()
            n = len(readers.read_csv(src, [entry["input"]["column"]]))
            print(f"read CSV alone: {n} rows in {time.perf_counter() - t:.2f} s")
        load0 = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        t = time.perf_counter()
        qc = prepare_dataset("moses", entry, src.parent, out, threads=args.threads, chunk_size=args.chunk_size)
        dt = time.perf_counter() - t
        print(f"prepare: {qc['rows_in']} SMILES in, {qc['rows_out']} out, {qc['rows_dropped']} dropped "
              f"({qc['drop_reasons']}), {qc['shards']} shards, {args.threads} processes")
        print(f"prepare: {dt:.1f} s = {qc['rows_in'] / dt:,.0f} molecules/s (target >= 6,000/s)")
        parent = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        print(f"cpu: parent {parent:.1f} s, workers {workers:.1f} s = {qc['rows_in'] / max(workers, 1e-9):,.0f} "
              f"molecules per worker-CPU-second; load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        t = time.perf_counter()
        enc = load_encoded(out)
        dl = time.perf_counter() - t
        print(f"load_encoded: {len(enc)} samples, {len(enc.tokens):,} tokens in {dl:.2f} s (target < 5 s)")
        size = sum(p.stat().st_size for p in (out / "shards").glob("*.parquet"))
        print(f"on disk: {size / 2**20:.1f} MiB in shards")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
