"""Prepare one dataset of the registry: raw files -> ``data/processed/<dataset>/`` (DESIGN §2).

Outputs (all built in a staging directory beside ``out_dir`` and moved in only when complete;
``qc.json`` is moved last and marks a finished run):

* ``table.parquet`` (tasks) or ``shards/part-00000.parquet, ...`` (corpora), zstd, explicit
  schema; every table has ``id`` (stable string), ``source_row`` (int64, 0-based data row of the
  raw file) and, for discrete inputs, ``tokens`` (``list<uint8>``, UTF-8 bytes of the canonical
  input) and ``length`` (int32);
* ``vocab.json`` (= :data:`encode.VOCAB`) for discrete datasets, ``standardize.json`` for HIGGS;
* ``qc.json``: rows in / out, dropped rows with file, row and reason (listed up to
  :data:`QC_MAX_LISTED`), label and length statistics.

Only this package knows the domains (DESIGN §4): RDKit canonicalization and Bemis–Murcko
scaffolds for SMILES, FASTA parsing for proteins, de-duplication across precisions for HIGGS.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from . import readers, sources
from ..atomic import commit_stage, new_stage_dir, write_parquet
from .readers import HIGGS_FEATURES, ReadError

QC_MAX_LISTED = 1000
CORPUS_CHUNK = 100_000      # rows per corpus shard
TASK_CHUNK = 4_000          # molecules per worker job for tasks
VALID_SEED = 0              # seed of the deterministic valid draw (HIGGS), unless split.seed is set
OUTPUTS = ("table.parquet", "shards", "vocab.json", "standardize.json", "qc.json")


class PrepareError(ValueError):
    """The registry entry or the raw data does not allow preparing the dataset."""


# --------------------------------------------------------------------------------------------
# RDKit work (runs in worker processes too: module-level, picklable arguments only)

def _smiles_failure(s: str) -> str:
    from rdkit import Chem

    if not s.strip():
        return "empty SMILES"
    m = Chem.MolFromSmiles(s, sanitize=False)
    if m is None:
        return "RDKit cannot parse the SMILES (syntax)"
    try:
        problems = Chem.DetectChemistryProblems(m)
    except Exception as e:  # noqa: BLE001 - report whatever RDKit says
        return f"RDKit sanitization failed: {e}"
    if problems:
        p = problems[0]
        return f"RDKit sanitization failed: {p.GetType()}: {p.Message()}"
    return "RDKit sanitization failed"


def canonicalize(texts: list[str], with_scaffold: bool = False
                 ) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Canonical isomeric SMILES (``None`` where RDKit fails), the Bemis–Murcko scaffold without
    chirality as DeepChem computes it (when asked), and the reason of each failure."""
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    block = rdBase.BlockLogs()  # noqa: F841 - RDKit logging is off while this object lives
    from_smiles = Chem.MolFromSmiles
    to_smiles = Chem.MolToSmiles
    canon: list[str | None] = []
    scaff: list[str | None] = []
    reason: list[str | None] = []
    for s in texts:
        mol = from_smiles(s) if s else None
        if mol is None:
            canon.append(None)
            scaff.append(None)
            reason.append(_smiles_failure(s))
            continue
        canon.append(to_smiles(mol))
        reason.append(None)
        if with_scaffold:
            scaff.append(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False))
    return canon, scaff, reason


# --------------------------------------------------------------------------------------------
# arrow helpers

TOKENS_TYPE = pa.list_(pa.uint8())


def tokens_array(texts: list[str]) -> tuple[pa.Array, np.ndarray]:
    """``list<uint8>`` of the UTF-8 bytes of each text, and the lengths (int32)."""
    enc = [t.encode("utf-8") for t in texts]
    lengths = np.fromiter((len(b) for b in enc), dtype=np.int64, count=len(enc))
    offsets = np.zeros(len(enc) + 1, dtype=np.int32)
    if len(enc):
        if int(lengths.sum()) >= 2**31:
            raise PrepareError("chunk too large for int32 offsets")
        np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.frombuffer(b"".join(enc), dtype=np.uint8), type=pa.uint8())
    arr = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)
    if arr.type != TOKENS_TYPE:
        arr = arr.cast(TOKENS_TYPE)
    return arr, lengths.astype(np.int32)


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        v = columns[field.name]
        arrays.append(v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------
# quality control

class QC:
    def __init__(self, name: str, entry: dict, cap: int | None = None):
        self.name = name
        self.entry = entry
        self.cap = QC_MAX_LISTED if cap is None else cap
        self.dropped: list[dict] = []
        self.n_dropped = 0
        self.reasons: Counter[str] = Counter()
        self.files: dict[str, dict[str, int]] = {}
        self.length_hist = np.zeros(0, dtype=np.int64)
        self.extra: dict[str, Any] = {}

    def file_rows(self, fname: str, rows_in: int) -> None:
        self.files.setdefault(fname, {"rows_in": 0, "rows_out": 0, "rows_dropped": 0})["rows_in"] += rows_in

    def drop(self, fname: str, row: int, reason: str, value: str | None = None, category: str | None = None) -> None:
        self.n_dropped += 1
        self.reasons[category or reason] += 1
        self.files[fname]["rows_dropped"] += 1
        if len(self.dropped) < self.cap:
            d = {"file": fname, "source_row": int(row), "reason": reason}
            if value is not None:
                d["value"] = value if len(value) <= 200 else value[:200] + "..."
            self.dropped.append(d)

    def merge_drops(self, fname: str, drops: list[tuple[int, str, str]], n: int, cats: Counter) -> None:
        for row, reason, value in drops:
            if len(self.dropped) < self.cap:
                self.dropped.append({"file": fname, "source_row": int(row), "reason": reason, "value": value})
        self.n_dropped += n
        self.files[fname]["rows_dropped"] += n
        self.reasons.update(cats)

    def lengths(self, lengths: np.ndarray) -> None:
        if len(lengths):
            h = np.bincount(np.asarray(lengths, dtype=np.int64))
            self.add_hist(h)

    def add_hist(self, h: np.ndarray) -> None:
        n = max(len(h), len(self.length_hist))
        out = np.zeros(n, dtype=np.int64)
        out[: len(self.length_hist)] += self.length_hist
        out[: len(h)] += h
        self.length_hist = out

    def length_stats(self) -> dict[str, Any] | None:
        h = self.length_hist
        total = int(h.sum())
        if total == 0:
            return None
        vals = np.arange(len(h))
        cdf = np.cumsum(h)

        def q(p: float) -> int:
            return int(np.searchsorted(cdf, p * total, side="left"))

        return {"unit": "tokens (UTF-8 bytes)", "min": int(vals[h > 0][0]), "max": int(vals[h > 0][-1]),
                "mean": float((vals * h).sum() / total), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99),
                "over_128": int(h[129:].sum()), "over_256": int(h[257:].sum()), "over_512": int(h[513:].sum())}

    def result(self, rows_out: int) -> dict[str, Any]:
        rows_in = sum(f["rows_in"] for f in self.files.values())
        for f in self.files.values():
            f["rows_out"] = f["rows_in"] - f["rows_dropped"]
        if rows_in - self.n_dropped != rows_out:
            raise AssertionError(f"{self.name}: qc bookkeeping: {rows_in} in - {self.n_dropped} dropped != {rows_out} out")
        out = {
            "dataset": self.name,
            "domain": self.entry.get("domain"),
            "role": self.entry.get("role"),
            "format": self.entry.get("format"),
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rows_dropped": self.n_dropped,
            "drop_reasons": dict(sorted(self.reasons.items())),
            "dropped": self.dropped,
            "dropped_listed": len(self.dropped),
            "dropped_not_listed": self.n_dropped - len(self.dropped),
            "files": self.files,
        }
        ls = self.length_stats()
        if ls is not None:
            out["length"] = ls
        out.update(self.extra)
        return out


def label_stats(values: np.ndarray, task: str) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    d: dict[str, Any] = {"count": int(ok.sum()), "missing": int((~ok).sum())}
    if task == "regression":
        x = v[ok]
        if len(x):
            d.update({"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
                      "p50": float(np.median(x)), "max": float(x.max())})
    else:
        c = Counter(int(a) for a in v[ok])
        d["classes"] = len(c)
        d["counts"] = {str(k): int(n) for k, n in sorted(c.items())}
    return d


# --------------------------------------------------------------------------------------------
# entry helpers

def _raw_path(raw_dir: Path, name: str, fname: str) -> Path:
    """``raw_dir/<file>`` (raw_dir = ``data/raw/<dataset>``); ``raw_dir/<dataset>/<file>`` is
    accepted too (raw_dir = ``data/raw``)."""
    p = raw_dir / fname
    if not p.exists() and (raw_dir / name / fname).exists():
        return raw_dir / name / fname
    return p


def _files(name: str, entry: dict) -> list[dict]:
    files = entry.get("files") or []
    if not files:
        raise PrepareError(f"dataset {name!r}: registry entry has no files")
    names = [f.get("name") for f in files]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise PrepareError(f"dataset {name!r}: file name(s) {dups} appear more than once in the registry entry "
                           f"(row ids and raw paths would collide)")
    return files


def _label_columns(name: str, entry: dict) -> list[str]:
    labels = entry.get("labels") or []
    if entry.get("role") == "task" and not labels:
        raise PrepareError(f"dataset {name!r}: a task needs 'labels' in the registry")
    return list(labels)


def _file_id(name: str, fname: str, multi: bool, row: int) -> str:
    return f"{name}:{fname}:{row}" if multi else f"{name}:{row}"


def _labels_from(df: pd.DataFrame, path: Path, labels: list[str], task: str) -> dict[str, np.ndarray]:
    rows = df["source_row"].to_numpy()
    out = {}
    for c in labels:
        vals = readers.numeric_column(df[c], rows, path, c, integer=task in ("binary", "multiclass"))
        if task == "binary":
            bad = ~np.isnan(vals) & ~np.isin(vals, (0.0, 1.0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ReadError(f"{path}: row {int(rows[i])}, column {c!r}: binary label must be 0 or 1, "
                                f"got {df[c].iat[i]!r}")
        out[c] = vals
    return out


def _label_names(labels: list[str]) -> list[str]:
    return ["label"] if len(labels) == 1 else list(labels)


def _label_type(task: str, multi: bool) -> pa.DataType:
    if task == "regression" or multi:
        return pa.float64()
    return pa.int64()


def _check_task(name: str, entry: dict) -> str:
    task = entry.get("task")
    if task not in ("regression", "binary", "multiclass"):
        raise PrepareError(f"dataset {name!r}: task must be regression, binary or multiclass, got {task!r}")
    return task


def _pool(threads: int) -> ProcessPoolExecutor:
    # fork where available: no re-import of the caller's __main__, instant start; workers only
    # run RDKit and write their own parquet file.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=threads, mp_context=mp.get_context(method))


def _canonicalize_parallel(texts: list[str], with_scaffold: bool, threads: int):
    if threads <= 1 or len(texts) <= TASK_CHUNK:
        return canonicalize(texts, with_scaffold)
    chunks = [texts[i:i + TASK_CHUNK] for i in range(0, len(texts), TASK_CHUNK)]
    canon, scaff, reason = [], [], []
    with _pool(threads) as ex:
        for c, s, r in ex.map(canonicalize, chunks, [with_scaffold] * len(chunks)):
            canon += c
            scaff += s
            reason += r
    return canon, scaff, reason


# --------------------------------------------------------------------------------------------
# task sources: every table format, folds from the data, several label columns

RESERVED_COLUMNS = ("id", "source_row", "file", "fold", "smiles", "scaffold", "seq", "tokens", "length")
LABELS_METADATA = b"maskbench.labels"   # table metadata: JSON list of the label columns


def _input_column(name: str, entry: dict) -> str:
    """The input column; SDF defaults to the molecule block, FASTA to the sequence."""
    col = (entry.get("input") or {}).get("column") or {"sdf": readers.MOL_BLOCK, "fasta": "seq"}.get(entry["format"])
    if not col:
        raise PrepareError(f"dataset {name!r}: input.column is required for format {entry['format']!r}")
    return col


def _labels_file(name: str, entry: dict) -> dict | None:
    """The file entry named by ``fasta.labels_file`` (a table joined to the FASTA records by id)."""
    lf = (entry.get("fasta") or {}).get("labels_file")
    if not lf:
        return None
    if entry["format"] != "fasta":
        raise PrepareError(f"dataset {name!r}: fasta.labels_file is for format 'fasta', not {entry['format']!r}")
    for f in _files(name, entry):
        if f["name"] == lf:
            return f
    raise PrepareError(f"dataset {name!r}: fasta.labels_file {lf!r} is not the name of one of its files "
                       f"{[f['name'] for f in _files(name, entry)]}")


def _data_files(name: str, entry: dict) -> list[dict]:
    lf = _labels_file(name, entry)
    files = [f for f in _files(name, entry) if lf is None or f["name"] != lf["name"]]
    if not files:
        raise PrepareError(f"dataset {name!r}: no data file besides the labels file")
    return files


def _plain_csv(fmt: str, f: dict) -> bool:
    """A plain (or .gz) CSV with a header and a one-character separator: read by
    :func:`readers.read_csv`, as the registry's original CSV datasets always were."""
    return (fmt == "csv" and not f.get("member") and sources.archive_kind(f["name"]) is None
            and f.get("header", True) and not f.get("column_names") and len(f.get("sep", ",")) == 1)


def _join_labels(name: str, raw_dir: Path, df: pd.DataFrame, lf: dict, fasta: dict,
                 qc: QC) -> tuple[pd.DataFrame, np.ndarray]:
    """The FASTA records with the columns of the labels file joined by id; and a mask of the
    records that have no row there."""
    lpath = _raw_path(raw_dir, name, lf["name"])
    lwhere = sources.describe(lpath, lf.get("member"))
    lfmt = sources.format_of(lf["name"], lf.get("member")) or "csv"
    if lfmt not in ("csv", "tsv", "parquet"):
        raise PrepareError(f"dataset {name!r}: fasta.labels_file {lf['name']!r} must be a csv, tsv or parquet table")
    lab = sources.read_frame(lpath, lfmt, lf)
    idc = fasta.get("labels_id_column", "id")
    if idc not in lab.columns:
        raise ReadError(f"{lwhere}: missing column {idc!r} (fasta.labels_id_column); the file has columns "
                        f"{[c for c in lab.columns if c != 'source_row'][:20]}")
    keys = lab[idc].astype(str).str.strip()
    dup = keys.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(lab["source_row"].iat[int(np.flatnonzero((keys == keys.iat[i]).to_numpy())[0])])
        raise ReadError(f"{lwhere}: row {int(lab['source_row'].iat[i])}, column {idc!r}: id {keys.iat[i]!r} "
                        f"appears again (first at row {first}); each FASTA record joins one row")
    extra = [c for c in lab.columns if c not in ("source_row", idc)]
    clash = [c for c in extra if c in df.columns]
    if clash:
        raise ReadError(f"{lwhere}: column(s) {clash} clash with the FASTA record's columns {list(df.columns)[1:]}")
    pos = pd.Index(keys).get_indexer(df["id"].astype(str).str.strip())  # [n] row in lab, -1 if none
    out = df.copy()
    for c in extra:
        vals = lab[c].to_numpy(dtype=object)
        out[c] = pd.array(np.where(pos >= 0, vals[pos], "").tolist(), dtype="str")
    used = int(len(set(pos[pos >= 0].tolist())))
    joined = qc.extra.setdefault("labels_file", {"file": lf["name"], "rows": 0, "records_joined": 0,
                                                 "records_without_row": 0, "rows_unused": 0})
    joined["rows"] = int(len(lab))
    joined["records_joined"] += int((pos >= 0).sum())
    joined["records_without_row"] += int((pos < 0).sum())
    joined["rows_unused"] = int(len(lab)) - used
    return out, pos < 0


def _read_source(name: str, entry: dict, raw_dir: Path, f: dict, columns: list[str],
                 qc: QC) -> tuple[pd.DataFrame, str, np.ndarray | None]:
    """``source_row`` + the string ``columns`` of one data file, the name messages use for it, and
    (FASTA with a labels file) the mask of records without a labels row."""
    fmt = entry["format"]
    path = _raw_path(raw_dir, name, f["name"])
    if _plain_csv(fmt, f):
        return readers.read_csv(path, columns, sep=f.get("sep", ",")), str(path), None
    if fmt not in sources.TABLE_FORMATS:
        raise PrepareError(f"dataset {name!r}: format {fmt!r} is not supported for a task "
                           f"(known: {', '.join(sources.TABLE_FORMATS)})")
    where = sources.describe(path, f.get("member"))
    fasta = entry.get("fasta") or {}
    lf = _labels_file(name, entry)
    if lf is None:
        df = sources.read_frame(path, fmt, f, columns, fasta)
        return df[["source_row", *dict.fromkeys(columns)]], where, None
    df, unjoined = _join_labels(name, raw_dir, sources.read_frame(path, fmt, f, None, fasta), lf, fasta, qc)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReadError(f"{where}: missing column(s) {missing}; the records have {list(df.columns)[1:]} "
                        f"(FASTA columns, label_pattern groups, columns of {lf['name']})")
    return df[["source_row", *dict.fromkeys([*columns, "id"])]], where, unjoined


def _fold_key(x: Any) -> str:
    """Fold values compare as text, integral numbers in plain form (``1``, ``1.0`` -> ``1``)."""
    s = str(x).strip()
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else s


def fold_map(name: str, split: dict) -> dict[str, str]:
    """``split.values`` as value -> fold (``train``/``valid``/``test`` map to themselves by default)."""
    values = split.get("values") or {k: k for k in ("train", "valid", "test")}
    out: dict[str, str] = {}
    for fold, v in values.items():
        for x in (v if isinstance(v, list) else [v]):
            key = _fold_key(x)
            if out.get(key, fold) != fold:
                raise PrepareError(f"dataset {name!r}: split.values: {x!r} is given for both {out[key]!r} and {fold!r}")
            out[key] = fold
    return out


@dataclass
class _Part:
    """The rows of one data file of a task."""
    fname: str
    where: str
    rows: np.ndarray               # [n] source rows
    frame: pd.DataFrame            # the input (and feature) columns as strings
    labels: dict[str, np.ndarray]  # label column -> [n] float64, NaN = missing
    fold: np.ndarray | None        # [n] object: train / valid / test (None: split computed later)
    keep: np.ndarray               # [n] bool; False = dropped and listed in qc


def _read_task_parts(name: str, entry: dict, raw_dir: Path, qc: QC, inputs: list[str]) -> list[_Part]:
    """Read every data file of a task: labels parsed, folds taken from the fold column (rows with
    an unknown value dropped), the valid flag applied, rows without any label (or with an
    unjoined id) dropped."""
    task = _check_task(name, entry)
    labels = _label_columns(name, entry)
    if task == "multiclass" and len(labels) > 1:
        raise PrepareError(f"dataset {name!r}: a multiclass task takes one label column, got {labels}; several label "
                           f"columns are supported for regression and binary tasks")
    if entry.get("fasta") and entry["format"] != "fasta":
        raise PrepareError(f"dataset {name!r}: the 'fasta' keys are for format 'fasta', not {entry['format']!r}")
    split = entry.get("split") or {}
    kind = split.get("kind")
    fold_col = split.get("column") if kind == "column" else None
    if kind == "column" and not fold_col:
        raise PrepareError(f"dataset {name!r}: split kind 'column' needs split.column (the fold column)")
    if split.get("column") and kind != "column":
        raise PrepareError(f"dataset {name!r}: split.column is for split kind 'column', not {kind!r}")
    valid_col = split.get("valid_column")
    if split.get("valid_fraction") and (valid_col or "valid" in (split.get("values") or {})):
        raise PrepareError(f"dataset {name!r}: split.valid_fraction carves valid rows from train; it cannot be combined "
                           f"with split.valid_column or split.values.valid (choose one)")
    fmap = fold_map(name, split) if fold_col else {}
    unknown: Counter[str] = Counter()
    parts: list[_Part] = []
    for f in _data_files(name, entry):
        fname = f["name"]
        need = [*inputs, *labels, *([fold_col] if fold_col else []), *([valid_col] if valid_col else [])]
        df, where, unjoined = _read_source(name, entry, raw_dir, f, need, qc)
        qc.file_rows(fname, len(df))
        rows = df["source_row"].to_numpy()
        labs = _labels_from(df, where, labels, task)
        keep = np.ones(len(df), dtype=bool)
        if unjoined is not None:
            lf = _labels_file(name, entry)["name"]
            for i in np.flatnonzero(unjoined):
                qc.drop(fname, rows[i], f"id {df['id'].iat[i]!r} has no row in {lf}", None,
                        category="no row in the labels file")
            keep &= ~unjoined
        fold = None
        if fold_col:
            raw = df[fold_col].astype(str).str.strip().tolist()
            fold = np.array([fmap.get(_fold_key(v)) for v in raw], dtype=object)
            known = np.array([v is not None for v in fold], dtype=bool)
            for i in np.flatnonzero(keep & ~known):
                unknown[raw[i]] += 1
                qc.drop(fname, rows[i], f"fold value {raw[i]!r} in column {fold_col!r} is not one of split.values",
                        raw[i], category="unknown fold value")
            keep &= known
        elif f.get("fold"):
            fold = np.full(len(df), f["fold"], dtype=object)
        elif kind == "fixed":
            raise PrepareError(f"dataset {name!r}, file {fname!r}: 'fold' must be train, valid or test for split "
                               f"kind 'fixed', got {f.get('fold')!r}")
        if valid_col:
            if fold is None:
                raise PrepareError(f"dataset {name!r}: split.valid_column needs folds (split kind 'column', "
                                   f"or a 'fold' on every file)")
            flag = readers.bool_column(df[valid_col], rows, where, valid_col)
            fold[flag & (fold == "train")] = "valid"
        parts.append(_Part(fname, where, rows, df[list(dict.fromkeys(inputs))], labs, fold, keep))
    if len({p.fold is None for p in parts}) > 1:
        raise PrepareError(f"dataset {name!r}: some files have a 'fold' and others not")
    if fold_col:
        qc.extra["split"] = {"kind": "column", "column": fold_col, "values": dict(sorted(fmap.items())),
                             "rows_with_unknown_value": int(sum(unknown.values())),
                             "unknown_values": dict(unknown.most_common(20))}
    return parts


def _drop_missing_labels(p: _Part, labels: list[str], qc: QC, value: Callable[[int], str]) -> None:
    """Drop the rows without a label (one label column) or without any label (several: the missing
    ones are masked out of losses and metrics downstream)."""
    if len(labels) == 1:
        miss, reason = np.isnan(p.labels[labels[0]]), f"missing label {labels[0]!r}"
    else:
        miss = np.all(np.stack([np.isnan(p.labels[c]) for c in labels]), axis=0)
        reason = f"every label missing ({len(labels)} columns)"
    for i in np.flatnonzero(p.keep & miss):
        qc.drop(p.fname, p.rows[i], reason, value(i), category="missing label")
    p.keep &= ~miss


def _finish_folds(name: str, entry: dict, ids: list[str], fold: np.ndarray | None, qc: QC) -> np.ndarray | None:
    """Carve ``split.valid_fraction`` from train (seeded by the row ids) and check every fold has rows."""
    if fold is None:
        return None
    split = entry.get("split") or {}
    vf = split.get("valid_fraction")
    if vf:
        n_valid = int((fold == "valid").sum())
        if n_valid:
            raise PrepareError(f"dataset {name!r}: split.valid_fraction carves valid rows from train, but "
                               f"{n_valid} rows already are in valid (a file with fold: valid?)")
        seed = int(split.get("seed", VALID_SEED))
        pool = np.flatnonzero(fold == "train")
        sel = stable_fraction([ids[i] for i in pool], float(vf), seed)
        fold[pool[sel]] = "valid"
        qc.extra["valid"] = {"fraction": float(vf), "seed": seed, "of": "train rows"}
    counts = {k: int((fold == k).sum()) for k in ("train", "valid", "test")}
    empty = [k for k, n in counts.items() if n == 0]
    if empty:
        hint = (" (valid rows come from split.values.valid, split.valid_column or split.valid_fraction)"
                if "valid" in empty else "")
        where = f"column {split['column']!r} maps to {fold_map(name, split)}; " if split.get("kind") == "column" else ""
        raise PrepareError(f"dataset {name!r}: no rows in fold(s) {empty} after prepare ({where}folds {counts}){hint}")
    qc.extra["folds"] = counts
    return fold


def _check_label_names(name: str, names: list[str], taken: list[str]) -> None:
    clash = sorted(set(names) & set(taken))
    if clash:
        raise PrepareError(f"dataset {name!r}: label column(s) {clash} would collide with the table's own columns; "
                           f"rename them in the source")


def _with_labels(table: pa.Table, names: list[str]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), LABELS_METADATA: json.dumps(names).encode()})


def _concat(parts: list[dict]) -> dict[str, Any]:
    return {k: [x for p in parts for x in p[k]] if isinstance(parts[0][k], list) else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


def _task_inputs(name: str, entry: dict, raw_dir: Path, qc: QC):
    """A text task's task kind, label columns, input column, label names and raw parts, checked."""
    task = _check_task(name, entry)
    labels = _label_columns(name, entry)
    col = _input_column(name, entry)
    names = _label_names(labels)
    _check_label_names(name, names if len(labels) > 1 else [], list(RESERVED_COLUMNS))
    return task, labels, col, names, _read_task_parts(name, entry, raw_dir, qc, [col])


# --------------------------------------------------------------------------------------------
# chemistry tasks

def _prepare_molecule_task(name: str, entry: dict, raw_dir: Path, stage: Path, threads: int, qc: QC) -> int:
    task, labels, col, names, parts = _task_inputs(name, entry, raw_dir, qc)
    multi_file = len(parts) > 1
    out = []
    for p in parts:
        texts = [s.strip() for s in p.frame[col].tolist()]
        _drop_missing_labels(p, labels, qc, lambda i: texts[i])
        canon, scaff, reason = _canonicalize_parallel(texts, True, threads)
        for i in np.flatnonzero(p.keep):
            if canon[i] is None:
                qc.drop(p.fname, p.rows[i], reason[i], texts[i], category="invalid SMILES")
                p.keep[i] = False
        idx = np.flatnonzero(p.keep)
        out.append({
            "id": [_file_id(name, p.fname, multi_file, int(p.rows[i])) for i in idx],
            "source_row": p.rows[idx].astype(np.int64),
            **({"fold": p.fold[idx].tolist()} if p.fold is not None else {}),
            "smiles": [canon[i] for i in idx],
            "scaffold": [scaff[i] for i in idx],
            **{n: p.labels[c][idx] for n, c in zip(names, labels)},
        })
    cols = _concat(out)
    fold = _finish_folds(name, entry, cols["id"], np.asarray(cols["fold"], dtype=object) if "fold" in cols else None, qc)
    if fold is not None:
        cols["fold"] = fold.tolist()
    toks, lengths = tokens_array(cols["smiles"])
    ltype = _label_type(task, len(labels) > 1)
    for n in names:
        if ltype == pa.int64():
            cols[n] = cols[n].astype(np.int64)
    cols["tokens"], cols["length"] = toks, lengths
    schema = pa.schema([("id", pa.string()), ("source_row", pa.int64()),
                        *([("fold", pa.string())] if fold is not None else []), ("smiles", pa.string()),
                        ("scaffold", pa.string()), *[(n, ltype) for n in names],
                        ("tokens", TOKENS_TYPE), ("length", pa.int32())])
    table = _with_labels(_table(cols, schema), names)
    write_parquet(table, stage / "table.parquet")
    qc.lengths(lengths)
    qc.extra["labels"] = {n: label_stats(cols[n], task) for n in names}
    qc.extra["scaffolds"] = int(len(set(cols["scaffold"])))
    return table.num_rows


# --------------------------------------------------------------------------------------------
# protein tasks

def _prepare_protein_task(name: str, entry: dict, raw_dir: Path, stage: Path, qc: QC) -> int:
    task, labels, col, names, parts = _task_inputs(name, entry, raw_dir, qc)
    out = []
    for p in parts:
        texts = [s.strip().upper() for s in p.frame[col].tolist()]
        for i in np.flatnonzero(p.keep):
            if not texts[i]:
                qc.drop(p.fname, p.rows[i], "empty sequence", texts[i], category="empty sequence")
                p.keep[i] = False
        _drop_missing_labels(p, labels, qc, lambda i: texts[i][:50])
        idx = np.flatnonzero(p.keep)
        stem = Path(p.fname).name
        out.append({
            "id": [f"{name}:{stem}:{int(p.rows[i])}" for i in idx],
            "source_row": p.rows[idx].astype(np.int64),
            "file": [p.fname] * len(idx),
            **({"fold": p.fold[idx].tolist()} if p.fold is not None else {}),
            "seq": [texts[i] for i in idx],
            **{n: p.labels[c][idx] for n, c in zip(names, labels)},
        })
    cols = _concat(out)
    fold = _finish_folds(name, entry, cols["id"], np.asarray(cols["fold"], dtype=object) if "fold" in cols else None, qc)
    if fold is not None:
        cols["fold"] = fold.tolist()
    ltype = _label_type(task, len(labels) > 1)
    for n in names:
        if ltype == pa.int64():
            cols[n] = cols[n].astype(np.int64)
    cols["tokens"], cols["length"] = tokens_array(cols["seq"])
    schema = pa.schema([("id", pa.string()), ("source_row", pa.int64()), ("file", pa.string()),
                        *([("fold", pa.string())] if fold is not None else []), ("seq", pa.string()),
                        *[(n, ltype) for n in names], ("tokens", TOKENS_TYPE), ("length", pa.int32())])
    table = _with_labels(_table(cols, schema), names)
    write_parquet(table, stage / "table.parquet")
    qc.lengths(cols["length"])
    qc.extra["labels"] = {n: label_stats(cols[n], task) for n in names}
    if task == "multiclass" and fold is not None:
        y = cols[names[0]]
        train_classes = set(y[fold == "train"].tolist())
        qc.extra["classes_not_in_train"] = {
            k: int(len(set(y[fold == k].tolist()) - train_classes)) for k in ("valid", "test")}
    return table.num_rows


# --------------------------------------------------------------------------------------------
# numeric tasks (feature columns of a csv / tsv / parquet table; one token per feature)

def _prepare_numeric_task(name: str, entry: dict, raw_dir: Path, stage: Path, qc: QC) -> int:
    task = _check_task(name, entry)
    labels = _label_columns(name, entry)
    names = _label_names(labels)
    feats = list((entry.get("input") or {}).get("columns") or [])
    if not feats:
        raise PrepareError(f"dataset {name!r}: a numeric task needs input.columns (its feature columns)")
    _check_label_names(name, [*names, *feats], ["id", "source_row", "file", "fold"])
    _check_label_names(name, names, feats)
    parts = _read_task_parts(name, entry, raw_dir, qc, feats)
    if parts[0].fold is None:
        raise PrepareError(f"dataset {name!r}: a numeric task needs its folds when it is prepared (split kind "
                           f"'column', or a 'fold' on every file): features are standardized with train-fold statistics")
    multi_file = len(parts) > 1
    out = []
    for p in parts:
        values = np.stack([readers.numeric_column(p.frame[c], p.rows, p.where, c) for c in feats], axis=1)  # [n, F]
        empty = np.isnan(values)
        for i in np.flatnonzero(p.keep & empty.any(axis=1)):
            c = feats[int(np.flatnonzero(empty[i])[0])]
            qc.drop(p.fname, p.rows[i], f"empty value in feature column {c!r}", None, category="missing feature value")
        p.keep &= ~empty.any(axis=1)
        _drop_missing_labels(p, labels, qc, lambda i: "")
        idx = np.flatnonzero(p.keep)
        out.append({"id": [_file_id(name, p.fname, multi_file, int(p.rows[i])) for i in idx],
                    "source_row": p.rows[idx].astype(np.int64), "file": [p.fname] * len(idx),
                    "fold": p.fold[idx].tolist(), "values": values[idx].astype(np.float32),
                    **{n: p.labels[c][idx] for n, c in zip(names, labels)}})
    cols = _concat(out)
    fold = _finish_folds(name, entry, cols["id"], np.asarray(cols["fold"], dtype=object), qc)
    cols["fold"] = fold.tolist()
    values = cols.pop("values")
    ltype = _label_type(task, len(labels) > 1)
    for n in names:
        if ltype == pa.int64():
            cols[n] = cols[n].astype(np.int64)
    for j, c in enumerate(feats):
        cols[c] = values[:, j]
    schema = pa.schema([("id", pa.string()), ("source_row", pa.int64()), ("file", pa.string()), ("fold", pa.string()),
                        *[(n, ltype) for n in names], *[(c, pa.float32()) for c in feats]])
    table = _with_labels(_table(cols, schema), names)
    write_parquet(table, stage / "table.parquet")
    train = values[fold == "train"].astype(np.float64)
    stats = {"features": feats, "fold": "train", "rows": int(len(train)),
             "mean": {c: float(train[:, j].mean()) for j, c in enumerate(feats)},
             "std": {c: float(train[:, j].std()) for j, c in enumerate(feats)}}
    (stage / "standardize.json").write_text(json.dumps(stats, indent=2) + "\n")
    qc.extra["labels"] = {n: label_stats(cols[n], task) for n in names}
    return table.num_rows


# --------------------------------------------------------------------------------------------
# corpora

def _corpus_smiles_shard(job: dict) -> dict:
    """Worker: canonicalize one chunk of a SMILES corpus and write it as one shard."""
    texts: list[str] = job["texts"]
    rows: np.ndarray = job["rows"]
    canon, _, reason = canonicalize(texts, False)
    keep = [i for i, c in enumerate(canon) if c is not None]
    drops = [(int(rows[i]), reason[i], texts[i][:200]) for i, c in enumerate(canon) if c is None]
    smiles = [canon[i] for i in keep]
    krows = rows[keep] if len(keep) != len(rows) else rows
    toks, lengths = tokens_array(smiles)
    prefix = job["id_prefix"]
    cols: dict[str, Any] = {"id": [f"{prefix}{r}" for r in krows.tolist()], "source_row": krows.astype(np.int64),
                            "smiles": smiles, "tokens": toks, "length": lengths}
    fields = [("id", pa.string()), ("source_row", pa.int64())]
    if job["file"] is not None:
        cols["file"] = [job["file"]] * len(smiles)
        fields.append(("file", pa.string()))
    fields += [("smiles", pa.string()), ("tokens", TOKENS_TYPE), ("length", pa.int32())]
    write_parquet(_table(cols, pa.schema(fields)), job["out"])
    return {"rows_out": len(smiles), "drops": drops[:QC_MAX_LISTED], "n_dropped": len(drops),
            "hist": np.bincount(lengths.astype(np.int64)) if len(lengths) else np.zeros(0, np.int64)}


def _corpus_chunks(name: str, entry: dict, raw_dir: Path, qc: QC, chunk: int) -> Iterable[dict]:
    files = _files(name, entry)
    multi = len(files) > 1
    fmt = entry["format"]
    for f in files:
        fname = f["name"]
        path = _raw_path(raw_dir, name, fname)
        if fmt == "csv":
            col = (entry.get("input") or {}).get("column")
            if not col:
                raise PrepareError(f"dataset {name!r}: a CSV corpus needs input.column")
            df = readers.read_csv(path, [col])
            texts = [s.strip() for s in df[col].tolist()]
        elif fmt == "lines_zip":
            df = readers.read_lines_zip(path)
            texts = [s.strip() for s in df["text"].tolist()]
        else:
            raise PrepareError(f"dataset {name!r}: format {fmt!r} is not supported for a SMILES corpus")
        rows = df["source_row"].to_numpy().astype(np.int64)
        del df
        qc.file_rows(fname, len(texts))
        prefix = f"{name}:{fname}:" if multi else f"{name}:"
        for s in range(0, len(texts), chunk):
            yield {"texts": texts[s:s + chunk], "rows": rows[s:s + chunk], "id_prefix": prefix,
                   "file": fname if multi else None, "fname": fname}


def _prepare_smiles_corpus(name: str, entry: dict, raw_dir: Path, stage: Path, threads: int, qc: QC,
                           chunk: int) -> int:
    shard_dir = stage / "shards"
    shard_dir.mkdir()
    jobs = []
    for k, job in enumerate(_corpus_chunks(name, entry, raw_dir, qc, chunk)):
        job["out"] = str(shard_dir / f"part-{k:05d}.parquet")
        jobs.append(job)
    if threads > 1 and len(jobs) > 1:
        with _pool(min(threads, len(jobs))) as ex:
            results = list(ex.map(_corpus_smiles_shard, jobs))
    else:
        results = [_corpus_smiles_shard(j) for j in jobs]
    total = 0
    for job, res in zip(jobs, results):
        total += res["rows_out"]
        cats = Counter({"invalid SMILES": res["n_dropped"]}) if res["n_dropped"] else Counter()
        qc.merge_drops(job["fname"], [(r, why, v) for r, why, v in res["drops"]], res["n_dropped"], cats)
        qc.add_hist(res["hist"])
    qc.extra["shards"] = len(jobs)
    return total


def _prepare_protein_corpus(name: str, entry: dict, raw_dir: Path, stage: Path, qc: QC, chunk: int) -> int:
    if entry["format"] != "fasta_gz":
        raise PrepareError(f"dataset {name!r}: format {entry['format']!r} is not supported for a protein corpus")
    shard_dir = stage / "shards"
    shard_dir.mkdir()
    seen: dict[str, str] = {}
    k = 0
    total = 0
    for f in _files(name, entry):
        fname = f["name"]
        df = readers.read_fasta_gz(_raw_path(raw_dir, name, fname))
        qc.file_rows(fname, len(df))
        keep = []
        accs = df["accession"].tolist()
        seqs = [s.upper() for s in df["seq"].tolist()]
        rows = df["source_row"].to_numpy()
        for i, (acc, s) in enumerate(zip(accs, seqs)):
            if not s:
                qc.drop(fname, rows[i], "empty sequence", acc, category="empty sequence")
            elif not acc:
                qc.drop(fname, rows[i], "no accession in the header", df["header"].iat[i], category="no accession")
            elif acc in seen:
                qc.drop(fname, rows[i], f"duplicate accession (first in {seen[acc]})", acc, category="duplicate accession")
            else:
                seen[acc] = fname
                keep.append(i)
        for s0 in range(0, len(keep), chunk):
            part = keep[s0:s0 + chunk]
            pseq = [seqs[i] for i in part]
            toks, lengths = tokens_array(pseq)
            cols = {"id": [f"{name}:{accs[i]}" for i in part], "source_row": rows[part].astype(np.int64),
                    "file": [fname] * len(part), "accession": [accs[i] for i in part], "seq": pseq,
                    "tokens": toks, "length": lengths}
            schema = pa.schema([("id", pa.string()), ("source_row", pa.int64()), ("file", pa.string()),
                                ("accession", pa.string()), ("seq", pa.string()), ("tokens", TOKENS_TYPE),
                                ("length", pa.int32())])
            write_parquet(_table(cols, schema), shard_dir / f"part-{k:05d}.parquet")
            qc.lengths(lengths)
            k += 1
            total += len(part)
    qc.extra["shards"] = k
    return total


# --------------------------------------------------------------------------------------------
# HIGGS

def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def higgs_duplicates(X: np.ndarray, label: np.ndarray, rel: np.ndarray, ab: np.ndarray) -> list[list[int]]:
    """Groups (size >= 2) of rows that are the same event printed at different precisions.

    Rows ``a`` and ``b`` match when the labels are equal and every feature satisfies
    ``|x_a - x_b| <= (rel_a + rel_b) * max(|x_a|, |x_b|) + abs_a + abs_b + 1e-7``: both values are
    within their file's rounding of the exact value. ``rel``/``ab`` are per row.
    """
    from scipy.spatial import cKDTree

    n = len(X)
    if n < 2:
        return []
    radius = 2 * float(rel.max()) * float(np.abs(X).max()) + 2 * float(ab.max()) + 1e-7
    pairs = cKDTree(X).query_pairs(r=radius, p=np.inf, output_type="ndarray")
    parent = np.arange(n)
    for a, b in pairs:
        if label[a] != label[b]:
            continue
        tol = (rel[a] + rel[b]) * np.maximum(np.abs(X[a]), np.abs(X[b])) + ab[a] + ab[b] + 1e-7
        if np.all(np.abs(X[a] - X[b]) <= tol):
            ra, rb = _find(parent, a), _find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in np.unique(pairs) if len(pairs) else []:
        groups.setdefault(_find(parent, int(i)), []).append(int(i))
    return [sorted(g) for g in groups.values() if len(g) > 1]


def stable_fraction(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """A boolean mask selecting ``round(fraction * n)`` of ``ids``: those with the smallest
    ``blake2b(seed:id)``. Deterministic, independent of row order and of the other rows' ids
    except through the count."""
    h = np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
                     for i in ids), dtype=np.uint64, count=len(ids))
    k = int(round(fraction * len(ids)))
    mask = np.zeros(len(ids), dtype=bool)
    if k:
        order = np.lexsort((np.asarray(ids, dtype=object).astype(str), h))
        mask[order[:k]] = True
    return mask


def _prepare_higgs(name: str, entry: dict, raw_dir: Path, stage: Path, qc: QC) -> int:
    files = _files(name, entry)
    frames, roundings = [], []
    for k, f in enumerate(files):
        fname = f["name"]
        fold = f.get("fold")
        if fold not in ("train", "test"):
            raise PrepareError(f"dataset {name!r}, file {fname!r}: fold must be 'train' or 'test', got {fold!r}")
        df, rnd = readers.read_higgs(_raw_path(raw_dir, name, fname), label=f.get("label", "first"),
                                     header=bool(f.get("header", False)), sep=f.get("sep", ","))
        qc.file_rows(fname, len(df))
        df.insert(0, "file_idx", k)
        frames.append(df)
        roundings.append(rnd)
    all_ = pd.concat(frames, ignore_index=True)
    fidx = all_["file_idx"].to_numpy()
    X = all_[HIGGS_FEATURES].to_numpy(dtype=np.float64)
    y = all_["label"].to_numpy()
    rel = np.array([r.rel for r in roundings])[fidx]
    ab = np.array([r.abs for r in roundings])[fidx]
    is_test = np.array([f["fold"] == "test" for f in files])
    err = np.array([r.error_at_one() for r in roundings])
    srow = all_["source_row"].to_numpy()
    fnames = [f["name"] for f in files]
    ids = [f"{name}:{fnames[fi]}:{r}" for fi, r in zip(fidx.tolist(), srow.tolist())]
    fold = np.where(is_test[fidx], "test", "train").astype(object)
    keep = np.ones(len(all_), dtype=bool)
    groups = higgs_duplicates(X, y, rel, ab)
    pairs_by_files: Counter[str] = Counter()
    examples: dict[str, list[dict]] = {}
    for g in groups:
        # a copy in a test file wins, then the most precise file, then file order, then row
        best = min(g, key=lambda i: (not is_test[fidx[i]], err[fidx[i]], fidx[i], srow[i]))
        if any(is_test[fidx[i]] for i in g):
            fold[best] = "test"
        for i in g:
            if i != best:
                keep[i] = False
                qc.drop(fnames[fidx[i]], srow[i], f"duplicate of {ids[best]}", None, category="duplicate row")
                pair = " / ".join(sorted({fnames[fidx[i]], fnames[fidx[best]]}))
                pairs_by_files[pair] += 1
                if len(examples.setdefault(pair, [])) < 5:
                    examples[pair].append({"dropped": ids[i], "kept": ids[best]})
    split = entry.get("split") or {}
    vf = float(split.get("valid_fraction", 0.0))
    pool = np.flatnonzero(keep & (fold == "train"))
    if vf > 0:
        sel = stable_fraction([ids[i] for i in pool], vf, int(split.get("seed", VALID_SEED)))
        fold[pool[sel]] = "valid"
    idx = np.flatnonzero(keep)
    cols: dict[str, Any] = {"id": [ids[i] for i in idx], "source_row": srow[idx].astype(np.int64),
                            "file": [fnames[fidx[i]] for i in idx], "fold": fold[idx].tolist(),
                            "label": y[idx].astype(np.int64)}
    values = X[idx].astype(np.float32)
    for j, c in enumerate(HIGGS_FEATURES):
        cols[c] = values[:, j]
    schema = pa.schema([("id", pa.string()), ("source_row", pa.int64()), ("file", pa.string()),
                        ("fold", pa.string()), ("label", pa.int64()),
                        *[(c, pa.float32()) for c in HIGGS_FEATURES]])
    write_parquet(_table(cols, schema), stage / "table.parquet")
    train = values[np.asarray(cols["fold"]) == "train"].astype(np.float64)
    if len(train) == 0:
        raise PrepareError(f"dataset {name!r}: no training rows left to compute standardization statistics")
    stats = {"features": list(HIGGS_FEATURES), "fold": "train", "rows": int(len(train)),
             "mean": {c: float(train[:, j].mean()) for j, c in enumerate(HIGGS_FEATURES)},
             "std": {c: float(train[:, j].std()) for j, c in enumerate(HIGGS_FEATURES)}}
    (stage / "standardize.json").write_text(json.dumps(stats, indent=2) + "\n")
    fold_out = np.asarray(cols["fold"])
    qc.extra["folds"] = {k: int((fold_out == k).sum()) for k in ("train", "valid", "test")}
    qc.extra["labels"] = {"label": {**label_stats(cols["label"], "binary"),
                                    "by_fold": {k: label_stats(cols["label"][fold_out == k], "binary")
                                                for k in ("train", "valid", "test")}}}
    qc.extra["duplicates"] = {"groups": len(groups), "rows_removed": int((~keep).sum()),
                              "by_files": dict(sorted(pairs_by_files.items())),
                              "examples": dict(sorted(examples.items()))}
    qc.extra["rounding"] = {fnames[k]: {"rel": r.rel, "abs": r.abs} for k, r in enumerate(roundings)}
    qc.extra["valid"] = {"fraction": vf, "seed": int(split.get("seed", VALID_SEED)), "of": "train pool after de-duplication"}
    return len(idx)


# --------------------------------------------------------------------------------------------
# entry point

def prepare_dataset(name: str, entry: dict, raw_dir: Path, out_dir: Path, threads: int = 1,
                    chunk_size: int = CORPUS_CHUNK) -> dict:
    """Prepare dataset ``name`` (its registry ``entry``) from ``raw_dir`` (= ``data/raw/<name>``)
    into ``out_dir`` (= ``data/processed/<name>``); returns the qc dict (also in ``qc.json``).

    ``threads`` worker processes canonicalize SMILES (one shard per ``chunk_size`` rows for
    corpora). On any error nothing is written: ``out_dir`` keeps its previous content (or is not
    created) and the staging directory is removed.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    threads = max(1, int(threads))
    role = entry.get("role")
    fmt = entry.get("format")
    kind = (entry.get("input") or {}).get("kind")
    if role not in ("task", "corpus"):
        raise PrepareError(f"dataset {name!r}: role must be task or corpus, got {role!r}")
    qc = QC(name, entry)
    stage = new_stage_dir(out_dir)
    try:
        discrete = True
        if fmt == "higgs":
            n = _prepare_higgs(name, entry, raw_dir, stage, qc)
            discrete = False
        elif kind == "numeric" and role == "task":
            n = _prepare_numeric_task(name, entry, raw_dir, stage, qc)
            discrete = False
        elif kind == "smiles" and role == "task":
            n = _prepare_molecule_task(name, entry, raw_dir, stage, threads, qc)
        elif kind == "smiles":
            n = _prepare_smiles_corpus(name, entry, raw_dir, stage, threads, qc, chunk_size)
        elif kind == "protein" and role == "task":
            n = _prepare_protein_task(name, entry, raw_dir, stage, qc)
        elif kind == "protein":
            n = _prepare_protein_corpus(name, entry, raw_dir, stage, qc, chunk_size)
        else:
            raise PrepareError(f"dataset {name!r}: no preparation for format={fmt!r}, input.kind={kind!r}, role={role!r}")
        if discrete:
            from .encode import VOCAB

            (stage / "vocab.json").write_text(json.dumps(VOCAB, indent=2) + "\n")
        result = qc.result(n)
        result["outputs"] = sorted(p.name for p in stage.iterdir())
        (stage / "qc.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        produced = {p.name for p in stage.iterdir()}
        commit_stage(stage, out_dir, order=list(OUTPUTS),
                     remove=tuple(o for o in OUTPUTS if o not in produced), last="qc.json")
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)
