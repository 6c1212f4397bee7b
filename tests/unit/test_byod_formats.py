"""Task sources in every registry format, plain / gzip / archive member, prepared from a registry
entry alone: the same table whatever the container, folds from a column, bad inputs refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rdkit import Chem

import byod_files as bf
from pipeline_src.data import prepare as prep
from pipeline_src.data.readers import MOL_BLOCK, ReadError
from pipeline_src.data.splits import write_split

N = 40


def source(fmt: str) -> tuple[bytes, str, dict]:
    """(bytes, inner file name, registry entry without files) of a small task in format ``fmt``."""
    mol = bf.molecules(N)
    if fmt == "csv":  # semicolons, header
        data = bf.csv_bytes(mol[["smiles", "p_np", "fold"]], sep=";")
        return data, "mols.csv", {"format": "csv", "input": {"column": "smiles", "kind": "smiles"}, "labels": ["p_np"],
                                  "task": "binary", "metric": "roc_auc", "split": {"kind": "column", "column": "fold"},
                                  "file": {"sep": ";"}}
    if fmt == "tsv":  # tabs, no header: columns col1, col2, col3
        data = bf.csv_bytes(mol[["smiles", "p_np", "fold"]], sep="\t", header=False)
        return data, "mols.tsv", {"format": "tsv", "input": {"column": "col1", "kind": "smiles"}, "labels": ["col2"],
                                  "task": "binary", "metric": "roc_auc", "split": {"kind": "column", "column": "col3"},
                                  "file": {"header": False}}
    if fmt == "parquet":
        data = bf.parquet_bytes(mol[["smiles", "p_np", "fold"]])
        return data, "mols.parquet", {"format": "parquet", "input": {"column": "smiles", "kind": "smiles"},
                                      "labels": ["p_np"], "task": "binary", "metric": "roc_auc",
                                      "split": {"kind": "column", "column": "fold"}, "file": {}}
    if fmt == "sdf":  # input from the molecule block, label and fold from data items
        data = bf.sdf_bytes(mol["smiles"].tolist(), {"p_np": mol["p_np"].tolist(), "set": mol["fold"].tolist()})
        return data, "mols.sdf", {"format": "sdf", "input": {"kind": "smiles"}, "labels": ["p_np"], "task": "binary",
                                  "metric": "roc_auc", "split": {"kind": "column", "column": "set"}, "file": {}}
    if fmt == "fasta":  # labels and fold parsed from the header
        seq = bf.sequences(N)
        heads = [f"{i} stability={y!r} set={f}" for i, y, f in zip(seq["id"], seq["stability"], seq["fold"])]
        return bf.fasta_bytes(heads, seq["seq"].tolist()), "seqs.fasta", {
            "format": "fasta", "input": {"kind": "protein"}, "labels": ["stability"], "task": "regression",
            "metric": "spearman", "split": {"kind": "column", "column": "set"},
            "fasta": {"label_pattern": r"stability=(?P<stability>\S+) set=(?P<set>\w+)"}, "file": {}}
    raise ValueError(fmt)


def make(tmp: Path, fmt: str, container: str, name: str = "byod") -> tuple[dict, Path]:
    data, inner, spec = source(fmt)
    raw = tmp / "raw" / name
    path, member = bf.write_source(data, inner, container, raw)
    extra = spec.pop("file")
    entry = {"domain": "x", "role": "task", **spec,
             "files": [bf.file_entry(path, raw, member, **extra)]}
    return entry, raw


def prepared(tmp: Path, entry: dict, raw: Path, name: str = "byod") -> tuple[dict, "object"]:
    out = tmp / "processed" / name
    qc = prep.prepare_dataset(name, entry, raw, out)
    return qc, pq.read_table(out / "table.parquet").to_pandas()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "sdf", "fasta"])
def test_every_container_gives_the_same_table(fmt, tmp_path):
    tables = {}
    for container in bf.CONTAINERS:
        entry, raw = make(tmp_path / container, fmt, container)
        qc, df = prepared(tmp_path / container, entry, raw)
        assert qc["rows_in"] == N and qc["rows_out"] == N and qc["rows_dropped"] == 0, (container, qc["dropped"][:3])
        assert qc["folds"] == {"train": 28, "valid": 4, "test": 8}
        tables[container] = df
    base = tables["plain"]
    named = ["tokens", *(["id", "file"] if fmt == "fasta" else [])]  # protein ids and 'file' name the raw file
    for container, df in tables.items():
        assert df.drop(columns=named).equals(base.drop(columns=named)), container
        assert df["id"].is_unique
    # the content is the source's: labels, folds and inputs row by row
    if fmt == "fasta":
        seq = bf.sequences(N)
        assert base["seq"].tolist() == seq["seq"].str.upper().tolist()
        np.testing.assert_allclose(base["label"].to_numpy(), seq["stability"].to_numpy())
        assert base["fold"].tolist() == seq["fold"].tolist()
    else:
        mol = bf.molecules(N)
        assert base["smiles"].tolist() == [Chem.CanonSmiles(s) for s in mol["smiles"]]
        assert base["label"].tolist() == mol["p_np"].tolist() and base["label"].dtype == np.int64
        assert base["fold"].tolist() == mol["fold"].tolist()
        assert base["scaffold"].notna().all()


def test_column_split_is_the_prepared_folds(tmp_path):
    entry, raw = make(tmp_path, "parquet", "zip")
    _, df = prepared(tmp_path, entry, raw)
    out = write_split(tmp_path / "processed/byod", "column", 0, tmp_path / "processed/byod/splits/column.parquet")
    split = pq.read_table(out).to_pandas()
    assert split["id"].tolist() == df["id"].tolist() and split["fold"].tolist() == df["fold"].tolist()


def test_unknown_fold_values_dropped_and_listed_valid_flag_applied(tmp_path):
    mol = bf.molecules(N)
    mol["set"] = ["TRAIN" if f != "test" else "TEST" for f in mol["fold"]]
    mol.loc[[3, 11], "set"] = "holdout"                 # unknown: dropped, listed in qc
    mol["is_valid"] = ["True" if f == "valid" else "" for f in mol["fold"]]  # FLIP-style flag
    raw = tmp_path / "raw/byod"
    path, member = bf.write_source(bf.csv_bytes(mol[["smiles", "p_np", "set", "is_valid"]]), "flip.csv", "tar.gz", raw)
    entry = {"domain": "x", "role": "task", "format": "csv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["p_np"], "task": "binary", "metric": "roc_auc",
             "split": {"kind": "column", "column": "set", "values": {"train": "TRAIN", "test": ["TEST"]},
                       "valid_column": "is_valid"},
             "files": [bf.file_entry(path, raw, member)]}
    qc, df = prepared(tmp_path, entry, raw)
    assert qc["rows_dropped"] == 2 and qc["drop_reasons"] == {"unknown fold value": 2}
    assert sorted(d["source_row"] for d in qc["dropped"]) == [3, 11]
    assert all("holdout" in d["reason"] and d["file"] == "bundle.tar.gz" for d in qc["dropped"])
    assert qc["split"]["unknown_values"] == {"holdout": 2}
    expect = [f for i, f in enumerate(mol["fold"]) if i not in (3, 11)]
    assert df["fold"].tolist() == expect


def test_valid_fraction_is_seeded_and_carved_from_train(tmp_path):
    sol = bf.solubility(60)
    sol["set"] = [0 if f != "test" else 1 for f in sol["fold"]]   # TDC-style numeric fold ids
    raw = tmp_path / "raw/byod"
    path, member = bf.write_source(bf.csv_bytes(sol[["smiles", "solubility", "set"]], sep="\t", header=False),
                                   "esol.tsv", "zip", raw)
    entry = {"domain": "x", "role": "task", "format": "tsv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["solubility"], "task": "regression", "metric": "rmse",
             "split": {"kind": "column", "column": "set", "values": {"train": 0, "test": 1}, "valid_fraction": 0.25,
                       "seed": 3},
             "files": [bf.file_entry(path, raw, member, header=False, column_names=["smiles", "solubility", "set"])]}
    qc1, df1 = prepared(tmp_path / "a", entry, raw)
    qc2, df2 = prepared(tmp_path / "b", entry, raw)
    assert df1["fold"].tolist() == df2["fold"].tolist()
    n_pool = int((sol["set"] == 0).sum())
    assert qc1["folds"]["valid"] == round(0.25 * n_pool) and qc1["folds"]["test"] == int((sol["set"] == 1).sum())
    assert set(df1.loc[df1["fold"] == "valid", "source_row"]) <= set(np.flatnonzero(sol["set"] == 0))
    entry["split"]["seed"] = 4
    _, df3 = prepared(tmp_path / "c", entry, raw)
    assert df3["fold"].tolist() != df1["fold"].tolist()


def test_multi_task_labels_with_missing_values(tmp_path):
    mol = bf.with_missing(bf.molecules(60), {"heavy": (3, 0), "aromatic_n": (4, 1)})
    mol.loc[[5, 9], ["p_np", "heavy", "aromatic_n"]] = None        # no label at all: dropped
    raw = tmp_path / "raw/byod"
    path, _ = bf.write_source(bf.csv_bytes(mol[["smiles", "p_np", "heavy", "aromatic_n", "fold"]], sep=";"),
                              "tox.csv", "gz", raw)
    entry = {"domain": "x", "role": "task", "format": "csv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["p_np", "heavy", "aromatic_n"], "task": "binary", "metric": "roc_auc",
             "split": {"kind": "column", "column": "fold"}, "files": [bf.file_entry(path, raw, sep=";")]}
    qc, df = prepared(tmp_path, entry, raw)
    assert qc["drop_reasons"] == {"missing label": 2}
    assert qc["labels"]["heavy"]["missing"] == int(mol["heavy"].isna().sum()) - 2
    t = pq.read_table(tmp_path / "processed/byod/table.parquet")
    assert json.loads(t.schema.metadata[prep.LABELS_METADATA]) == ["p_np", "heavy", "aromatic_n"]
    keep = mol.drop(index=[5, 9]).reset_index(drop=True)
    for c in ["p_np", "heavy", "aromatic_n"]:
        assert bf.npz_equal(df[c].to_numpy(), keep[c].astype("float64").to_numpy(na_value=np.nan)), c


def test_fasta_labels_joined_from_a_table_by_id(tmp_path):
    seq = bf.sequences(N)
    raw = tmp_path / "raw/byod"
    fa, _ = bf.write_source(bf.fasta_bytes([f"{i} some protein" for i in seq["id"]], seq["seq"].tolist()),
                            "seqs.fasta", "gz", raw)
    table = seq[["id", "stability", "fold"]].iloc[2:].copy()    # records 0 and 1 have no row
    table.loc[len(table) + 2] = ["P99999", 0.5, "train"]         # a row no record uses
    lab, _ = bf.write_source(bf.csv_bytes(table, sep="\t"), "labels.tsv", "plain", raw)
    entry = {"domain": "x", "role": "task", "format": "fasta", "input": {"kind": "protein"}, "labels": ["stability"],
             "task": "regression", "metric": "spearman", "split": {"kind": "column", "column": "fold"},
             "fasta": {"labels_file": "labels.tsv"},
             "files": [bf.file_entry(fa, raw), bf.file_entry(lab, raw)]}
    qc, df = prepared(tmp_path, entry, raw)
    assert qc["drop_reasons"] == {"no row in the labels file": 2}
    assert sorted(d["source_row"] for d in qc["dropped"]) == [0, 1]
    assert qc["labels_file"] == {"file": "labels.tsv", "rows": N - 1, "records_joined": N - 2,
                                 "records_without_row": 2, "rows_unused": 1}
    np.testing.assert_allclose(df["label"].to_numpy(), seq["stability"].iloc[2:].to_numpy())
    assert df["fold"].tolist() == seq["fold"].iloc[2:].tolist()


def test_numeric_task_from_parquet_columns(tmp_path):
    rng = np.random.default_rng(0)
    import pandas as pd

    X = rng.normal(size=(50, 4)).astype(np.float64)
    df = pd.DataFrame({f"f{j}": X[:, j] for j in range(4)})
    df["y"] = (X[:, 0] > 0).astype(int)
    df["fold"] = [bf.fold_of(i) for i in range(50)]
    raw = tmp_path / "raw/num"
    path, member = bf.write_source(bf.parquet_bytes(df), "tab.parquet", "zip", raw)
    entry = {"domain": "x", "role": "task", "format": "parquet", "input": {"columns": ["f0", "f1", "f2", "f3"], "kind": "numeric"},
             "labels": ["y"], "task": "binary", "metric": "accuracy", "split": {"kind": "column", "column": "fold"},
             "files": [bf.file_entry(path, raw, member)]}
    out = tmp_path / "processed/num"
    prep.prepare_dataset("num", entry, raw, out)
    from pipeline_src.data.encode import load_encoded

    enc = load_encoded(out)
    st = json.loads((out / "standardize.json").read_text())
    train = np.array([bf.fold_of(i) == "train" for i in range(50)])
    np.testing.assert_allclose(st["mean"]["f2"], X[train, 2].astype(np.float32).mean(), rtol=1e-5)
    assert enc.kind == "continuous" and enc.values.shape == (50, 4)
    np.testing.assert_allclose(enc.values[train].mean(0), 0, atol=1e-5)


# ---------------------------------------------------------------------------------- bad inputs

def _bad(tmp_path: Path, entry: dict, raw: Path, match: str) -> None:
    out = tmp_path / "processed/byod"
    with pytest.raises((ReadError, prep.PrepareError), match=match) as e:
        prep.prepare_dataset("byod", entry, raw, out)
    assert not out.exists() or not any(out.iterdir()), "nothing half-written"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging left behind"
    return str(e.value)


def test_member_missing_from_the_archive(tmp_path):
    for container in ("zip", "tar.gz"):
        entry, raw = make(tmp_path / container, "csv", container)
        entry["files"][0]["member"] = "bundle/other.csv"
        msg = _bad(tmp_path / container, entry, raw, r"no member 'bundle/other.csv'")
        assert "bundle/mols.csv" in msg and entry["files"][0]["name"] in msg


def test_archive_with_several_files_needs_a_member(tmp_path):
    entry, raw = make(tmp_path, "csv", "zip")
    del entry["files"][0]["member"]
    _bad(tmp_path, entry, raw, r"holds 2 files .*name the one to read with 'member'")


def test_fold_column_with_unknown_values_only(tmp_path):
    entry, raw = make(tmp_path, "parquet", "plain")
    entry["split"]["values"] = {"train": "TRAIN", "valid": "VALID", "test": "TEST"}
    _bad(tmp_path, entry, raw, r"no rows in fold\(s\) \['train', 'valid', 'test'\].*column 'fold' maps to")


def test_label_column_absent(tmp_path):
    for fmt, col in (("csv", "p_np"), ("sdf", "p_np"), ("parquet", "p_np")):
        entry, raw = make(tmp_path / fmt, fmt, "gz")
        entry["labels"] = ["p_np_missing"]
        msg = _bad(tmp_path / fmt, entry, raw, r"missing column\(s\) \['p_np_missing'\]")
        assert entry["files"][0]["name"] in msg


def test_unparsable_sdf_record_names_the_record(tmp_path):
    mol = bf.molecules(6)
    data = bf.sdf_bytes(mol["smiles"].tolist(), {"p_np": mol["p_np"].tolist(), "set": mol["fold"].tolist()})
    records = data.decode().split("$$$$\n")
    lines = records[3].split("\n")
    lines[3] = "  x  y  0  0  0  0  0  0  0  0999 V2000"      # a counts line RDKit cannot read
    records[3] = "\n".join(lines)
    raw = tmp_path / "raw/byod"
    path, member = bf.write_source("$$$$\n".join(records).encode(), "mols.sdf", "zip", raw)
    entry = {"domain": "x", "role": "task", "format": "sdf", "input": {"kind": "smiles"}, "labels": ["p_np"],
             "task": "binary", "metric": "roc_auc", "split": {"kind": "column", "column": "set"},
             "files": [bf.file_entry(path, raw, member)]}
    msg = _bad(tmp_path, entry, raw, r"row 3 \(record 4, line \d+\), column 'mol block': RDKit cannot read")
    assert "bundle.zip [member bundle/mols.sdf]" in msg


def test_truncated_sdf_and_a_valence_error(tmp_path):
    mol = bf.molecules(10)
    data = bf.sdf_bytes(mol["smiles"].tolist(), {"p_np": mol["p_np"].tolist(), "set": mol["fold"].tolist()}).decode()
    raw = tmp_path / "raw/byod"
    path, _ = bf.write_source(data[: data.index("M  END", data.index("$$$$") + 5)].encode(), "cut.sdf", "plain", raw)
    entry = {"domain": "x", "role": "task", "format": "sdf", "input": {"kind": "smiles"}, "labels": ["p_np"],
             "task": "binary", "metric": "roc_auc", "split": {"kind": "column", "column": "set"},
             "files": [bf.file_entry(path, raw)]}
    _bad(tmp_path, entry, raw, rf"row 1 \(record 2, line \d+\), column '{MOL_BLOCK}': no 'M  END' line")
    # a five-valent carbon reads but does not sanitize: dropped like an invalid SMILES, with RDKit's reason
    block = Chem.MolToMolBlock(Chem.MolFromSmiles("CC(C)(C)(C)C", sanitize=False))
    rec = block + "> <p_np>\n1\n\n> <set>\ntrain\n\n$$$$\n"
    (raw / "cut.sdf").write_text(data + rec)
    entry["files"] = [bf.file_entry(raw / "cut.sdf", raw)]
    qc = prep.prepare_dataset("byod", entry, raw, tmp_path / "ok")
    assert qc["drop_reasons"] == {"invalid SMILES": 1} and "valence" in qc["dropped"][0]["reason"].lower()
    assert qc["dropped"][0]["source_row"] == 10
