#!/usr/bin/env python
"""Cut small real subsets of the dataset mirror into ``tests/fixtures/mirror``.

Every fixture file keeps its source's format: same header, delimiter, line endings (CRLF stays
CRLF), compression (gzip stays gzip, zip stays zip with the same member name). Rows are kept in
their original order. Writes ``tests/fixtures/datasets.yaml``: the registry restricted to the
fixture files, with their sha256 (and sha256_lf where the registry has one).

    python scripts/make_fixtures.py [--mirror ../shared/datasets] [--registry config/datasets.yaml]

The output is deterministic (gzip mtime 0, zip timestamps copied from the source).
"""
from __future__ import annotations

import argparse
import copy
import csv
import gzip
import hashlib
import io
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline_src.data import readers  # noqa: E402
from pipeline_src.data.prepare import higgs_duplicates  # noqa: E402
from pipeline_src.data.readers import HIGGS_FEATURES  # noqa: E402

MOLECULENET_ROWS = {"esol": 120, "freesolv": 120, "lipo": 120, "bbbp": 130, "bace": 110, "hiv": 130}
MINORITY = {"hiv": (1, 40), "bbbp": (0, 40), "bace": (0, 40)}  # (minority label, rows) mixed in
BACE_COLUMNS = 12        # bace.csv has 595 descriptor columns; keep the first 12 (smiles, CID, Class, ...)
MOSES_ROWS = 2000
CHEMBL_ROWS = 200
TAPE_ROWS = {"train": 80, "valid": 30, "test": 30}
UNIPROT_FILES = ("UP000000625-E.coli.fasta.gz", "UP000002717-S.elongatus.fasta.gz")
UNIPROT_RECORDS = 100


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their endings (``\\n`` or ``\\r\\n``) kept."""
    return data.splitlines(keepends=True)


def select_lines(data: bytes, rows: list[int], header: bool = True, keep_order: bool = False) -> bytes:
    """The header and the data rows ``rows`` (0-based), in file order unless ``keep_order``."""
    lines = split_lines(data)
    head = lines[:1] if header else []
    body = lines[1:] if header else lines
    picked = list(dict.fromkeys(rows)) if keep_order else sorted(set(rows))
    return b"".join(head + [body[i] for i in picked if i < len(body)])


def unparsable_rows(path: Path, column: str) -> list[int]:
    from rdkit import Chem, rdBase

    _block = rdBase.BlockLogs()  # noqa: F841
    df = readers.read_csv(path, [column])
    return [int(r) for r, s in zip(df["source_row"], df[column]) if Chem.MolFromSmiles(s) is None]


def cut_columns_csv(data: bytes, ncols: int) -> bytes:
    text = data.decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator=newline)
    for row in csv.reader(io.StringIO(text, newline="")):
        w.writerow(row[:ncols])
    return out.getvalue().encode("utf-8")


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def interleaved_rows(path: Path, label: str, n: int, minority: int, count: int) -> list[int]:
    """``count`` rows of the minority class ``minority`` and ``n`` rows of the other class, in an
    order that interleaves the two evenly (HIV has 3.5 % actives, BBBP 24 % negatives, and BACE
    lists most positives first: a plain head of the file gives scaffold folds of one class, where
    ROC-AUC is undefined). Lines are reordered, never altered."""
    y = pd.read_csv(path, usecols=[label])[label].to_numpy()
    few = np.flatnonzero(y == minority)[:count]
    many = np.flatnonzero(y != minority)[:n]
    key = np.concatenate([(np.arange(len(few)) + 0.5) / len(few), (np.arange(len(many)) + 0.25) / len(many)])
    rows = np.concatenate([few, many])
    return [int(i) for i in rows[np.argsort(key, kind="stable")]]


def moleculenet(name: str, entry: dict, mirror: Path) -> dict[str, bytes]:
    f = entry["files"][0]
    src = mirror / f["mirror_path"]
    data = src.read_bytes()
    n = MOLECULENET_ROWS[name]
    if name in MINORITY:
        rows = interleaved_rows(src, entry["labels"][0], n, *MINORITY[name])
    else:
        rows = list(range(n))
    rows += unparsable_rows(src, entry["input"]["column"])
    out = select_lines(data, rows, keep_order=name in MINORITY)
    if name == "bace":
        out = cut_columns_csv(out, BACE_COLUMNS)
    return {f["name"]: out}


def moses(entry: dict, mirror: Path) -> dict[str, bytes]:
    f = entry["files"][0]
    data = gzip.decompress((mirror / f["mirror_path"]).read_bytes())
    return {f["name"]: gz(select_lines(data, list(range(MOSES_ROWS))))}


def chembl(entry: dict, mirror: Path) -> dict[str, bytes]:
    out = {}
    for f in entry["files"]:
        with zipfile.ZipFile(mirror / f["mirror_path"]) as zf:
            (info,) = zf.infolist()
            data = zf.read(info)
        body = select_lines(data, list(range(CHEMBL_ROWS)), header=False)
        zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = info.external_attr
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zw:
            zw.writestr(zi, body)
        out[f["name"]] = buf.getvalue()
    return out


def tape(name: str, entry: dict, mirror: Path) -> dict[str, bytes]:
    out = {}
    if name != "remote_homology":
        for f in entry["files"]:
            out[f["name"]] = select_lines((mirror / f["mirror_path"]).read_bytes(), list(range(TAPE_ROWS[f["fold"]])))
        return out
    # remote homology: 1195 classes; keep classes that occur in all three folds so that they repeat
    frames = {f["fold"]: readers.read_csv(mirror / f["mirror_path"], ["seq", "label"]) for f in entry["files"]}
    common = set(frames["train"]["label"]) & set(frames["valid"]["label"]) & set(frames["test"]["label"])
    counts = Counter(frames["train"]["label"])
    chosen = sorted(common, key=lambda c: (-counts[c], int(c)))[:10]
    for f in entry["files"]:
        df = frames[f["fold"]]
        want = TAPE_ROWS[f["fold"]]
        per = Counter()
        rows = []
        cap = max(2, want // len(chosen) + 1) if f["fold"] == "train" else want
        for r, lab in zip(df["source_row"], df["label"]):
            if lab in chosen and per[lab] < cap and len(rows) < want:
                rows.append(int(r))
                per[lab] += 1
        for r in df["source_row"]:  # fill up with other rows if needed
            if len(rows) >= want:
                break
            if int(r) not in rows:
                rows.append(int(r))
        out[f["name"]] = select_lines((mirror / f["mirror_path"]).read_bytes(), rows)
    return out


def uniprot(entry: dict, mirror: Path) -> tuple[dict[str, bytes], list[dict]]:
    out, files = {}, []
    for f in entry["files"]:
        if f["name"] not in UNIPROT_FILES:
            continue
        lines = split_lines(gzip.decompress((mirror / f["mirror_path"]).read_bytes()))
        keep, records = [], 0
        for ln in lines:
            if ln.startswith(b">"):
                records += 1
                if records > UNIPROT_RECORDS:
                    break
            keep.append(ln)
        out[f["name"]] = gz(b"".join(keep))
        files.append(f)
    return out, files


def higgs(entry: dict, mirror: Path) -> dict[str, bytes]:
    files = entry["files"]
    frames, rnds = [], []
    for k, f in enumerate(files):
        df, r = readers.read_higgs(mirror / f["mirror_path"], f["label"], f["header"], f["sep"])
        df["f"] = k
        frames.append(df)
        rnds.append(r)

    a = pd.concat(frames, ignore_index=True)
    fi = a["f"].to_numpy()
    groups = higgs_duplicates(a[HIGGS_FEATURES].to_numpy(), a["label"].to_numpy(),
                              np.array([r.rel for r in rnds])[fi], np.array([r.abs for r in rnds])[fi])
    names = [f["name"] for f in files]
    idx = {n: k for k, n in enumerate(names)}
    rows: dict[str, set[int]] = {n: set() for n in names}
    # plain leading rows of each file
    base = {"h2o_higgs_train_10k.csv": range(0, 200), "h2o_higgs_test_5k_fullprecision.csv": range(0, 280),
            "sas_higgs.csv": range(0, 280), "lightgbm_binary.train": range(0, 250), "lightgbm_binary.test": range(0, 100)}
    for n, r in base.items():
        rows[n].update(r)
    rows["h2o_higgs_train_10k.csv"].update(range(7000, 7080))  # = lightgbm_binary.test rows 0..79
    # every duplicate group that involves a file other than the two LightGBM ones and the h2o train
    # copy they repeat (the test/sas overlaps, the sas internal duplicate), with all its members
    lgbm_h2o = {idx["h2o_higgs_train_10k.csv"], idx["lightgbm_binary.train"], idx["lightgbm_binary.test"]}
    for g in groups:
        fs = {int(fi[i]) for i in g}
        if not fs <= lgbm_h2o:
            for i in g:
                rows[names[int(fi[i])]].add(int(a["source_row"].iat[i]))
    out = {}
    for f in files:
        data = (mirror / f["mirror_path"]).read_bytes()
        out[f["name"]] = select_lines(data, sorted(rows[f["name"]]), header=bool(f["header"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror", default="../shared/datasets", help="dataset mirror root (default: %(default)s)")
    ap.add_argument("--registry", default=str(REPO / "config" / "datasets.yaml"))
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    mirror = Path(args.mirror)
    out_root = Path(args.out)
    reg_text = Path(args.registry).read_text(encoding="utf-8")
    reg = yaml.safe_load(reg_text)["datasets"]
    new_reg: dict[str, dict] = {}
    total = 0
    for name, entry in reg.items():
        files = list(entry["files"])
        if name in MOLECULENET_ROWS:
            blobs = moleculenet(name, entry, mirror)
        elif name == "moses":
            blobs = moses(entry, mirror)
        elif name == "chembl31":
            blobs = chembl(entry, mirror)
        elif name in ("stability", "fluorescence", "remote_homology"):
            blobs = tape(name, entry, mirror)
        elif name == "uniprot":
            blobs, files = uniprot(entry, mirror)
        elif name == "higgs":
            blobs = higgs(entry, mirror)
        else:
            print(f"skipping {name}: no fixture rule", file=sys.stderr)
            continue
        e = copy.deepcopy(entry)
        e["files"] = []
        for f in files:
            data = blobs[f["name"]]
            dst = out_root / "mirror" / f["mirror_path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            total += len(data)
            nf = copy.deepcopy(f)
            nf["sha256"] = sha256(data)
            if "sha256_lf" in f:
                nf["sha256_lf"] = sha256(data.replace(b"\r\n", b"\n"))
            e["files"].append(nf)
            print(f"{name:16s} {f['mirror_path']:70s} {len(data):8d} bytes")
        new_reg[name] = e
    header = ("# Test fixture registry: config/datasets.yaml restricted to the small real subsets under\n"
              "# tests/fixtures/mirror (same mirror_path layout), with the fixtures' checksums.\n"
              "# Generated by scripts/make_fixtures.py; do not edit by hand.\n")
    body = yaml.safe_dump({"datasets": new_reg}, sort_keys=False, allow_unicode=True, width=1000)
    (out_root / "datasets.yaml").write_text(header + body, encoding="utf-8")
    print(f"total {total} bytes in {sum(len(e['files']) for e in new_reg.values())} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
