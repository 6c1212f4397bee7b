"""prepare_dataset on the fixture subsets: tables, qc, atomicity, encoded round trip."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from pipeline_src.data import prepare as prep
from pipeline_src.data import readers
from pipeline_src.data.encode import VOCAB, load_encoded, table_files
from pipeline_src.data.readers import HIGGS_FEATURES, ReadError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MIRROR = FIXTURES / "mirror"
REGISTRY = yaml.safe_load((FIXTURES / "datasets.yaml").read_text())["datasets"]


def stage_raw(name: str, tmp: Path, entry: dict | None = None) -> Path:
    """Copy the fixture files of ``name`` to ``tmp/raw/<name>/<file name>`` (the download layout)."""
    raw = tmp / "raw" / name
    raw.mkdir(parents=True, exist_ok=True)
    for f in (entry or REGISTRY[name])["files"]:
        shutil.copy(MIRROR / f["mirror_path"], raw / f["name"])
    return raw


def run(name: str, tmp: Path, entry: dict | None = None, **kw) -> tuple[dict, Path]:
    entry = entry or REGISTRY[name]
    raw = stage_raw(name, tmp, entry)
    out = tmp / "processed" / name
    return prep.prepare_dataset(name, entry, raw, out, **kw), out


def read_table(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in table_files(out)])


def unparsable(path: Path, column: str) -> list[int]:
    _block = rdBase.BlockLogs()  # noqa: F841
    df = readers.read_csv(path, [column])
    return [int(r) for r, s in zip(df["source_row"], df[column]) if Chem.MolFromSmiles(s) is None]


# ---------------------------------------------------------------------------------- chemistry

@pytest.mark.parametrize("name", ["bbbp", "hiv"])
def test_invalid_smiles_dropped_and_reported_with_row(name, tmp_path):
    qc, out = run(name, tmp_path)
    entry = REGISTRY[name]
    bad = unparsable(MIRROR / entry["files"][0]["mirror_path"], "smiles")
    assert len(bad) == {"bbbp": 11, "hiv": 7}[name]
    assert qc["rows_dropped"] == len(bad) and qc["rows_out"] == qc["rows_in"] - len(bad)
    assert sorted(d["source_row"] for d in qc["dropped"]) == bad
    assert all(d["file"] == entry["files"][0]["name"] and d["reason"].startswith("RDKit") and d["value"]
               for d in qc["dropped"])
    assert qc["drop_reasons"] == {"invalid SMILES": len(bad)}
    t = read_table(out)
    assert t.num_rows == qc["rows_out"]
    assert not set(bad) & set(t.column("source_row").to_pylist())
    assert json.loads((out / "qc.json").read_text()) == qc


def test_molecule_table_schema_and_content(tmp_path):
    qc, out = run("bbbp", tmp_path)
    t = pq.read_table(out / "table.parquet")
    assert t.schema.field("id").type == pa.string()
    assert t.schema.field("source_row").type == pa.int64()
    assert t.schema.field("label").type == pa.int64()
    assert t.schema.field("tokens").type == pa.list_(pa.uint8())
    assert t.schema.field("length").type == pa.int32()
    df = t.to_pandas()
    assert df["id"].is_unique and df["id"].iat[0] == f"bbbp:{df['source_row'].iat[0]}"
    assert df["source_row"].is_monotonic_increasing
    raw = readers.read_csv(MIRROR / REGISTRY["bbbp"]["files"][0]["mirror_path"], ["smiles", "p_np"]).set_index("source_row")
    _block = rdBase.BlockLogs()  # noqa: F841
    for _, r in df.iloc[::7].iterrows():
        mol = Chem.MolFromSmiles(raw.loc[r["source_row"], "smiles"])
        assert r["smiles"] == Chem.MolToSmiles(mol)
        assert r["scaffold"] == MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        assert r["label"] == int(raw.loc[r["source_row"], "p_np"])
        assert bytes(r["tokens"]).decode() == r["smiles"] and r["length"] == len(r["smiles"].encode())
    assert json.loads((out / "vocab.json").read_text()) == VOCAB
    assert qc["labels"]["label"]["counts"] == {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()}
    assert qc["length"]["max"] == df["length"].max()


@pytest.mark.parametrize("name", ["esol", "freesolv", "lipo", "bace"])
def test_regression_and_other_tasks(name, tmp_path):
    qc, out = run(name, tmp_path)
    t = pq.read_table(out / "table.parquet")
    want = pa.float64() if REGISTRY[name]["task"] == "regression" else pa.int64()
    assert t.schema.field("label").type == want
    assert qc["rows_dropped"] == 0 and t.num_rows == qc["rows_in"]


def test_crlf_and_lf_give_the_same_table(tmp_path):
    _, out_crlf = run("bbbp", tmp_path / "a")
    raw = stage_raw("bbbp", tmp_path / "b")
    p = raw / "BBBP.csv"
    p.write_bytes(p.read_bytes().replace(b"\r\n", b"\n"))
    assert b"\r" not in p.read_bytes()
    prep.prepare_dataset("bbbp", REGISTRY["bbbp"], raw, tmp_path / "b" / "out")
    assert pq.read_table(out_crlf / "table.parquet").equals(pq.read_table(tmp_path / "b" / "out" / "table.parquet"))


def test_error_leaves_nothing_behind_and_names_file_and_column(tmp_path):
    entry = copy.deepcopy(REGISTRY["bbbp"])
    entry["labels"] = ["p_np_missing"]
    raw = stage_raw("bbbp", tmp_path)
    out = tmp_path / "processed" / "bbbp"
    with pytest.raises(ReadError) as e:
        prep.prepare_dataset("bbbp", entry, raw, out)
    assert "BBBP.csv" in str(e.value) and "p_np_missing" in str(e.value)
    assert not out.exists()
    assert list((tmp_path / "processed").iterdir()) == []  # no staging directory left

    # an existing good output stays untouched by a failed run
    prep.prepare_dataset("bbbp", REGISTRY["bbbp"], raw, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ReadError):
        prep.prepare_dataset("bbbp", entry, raw, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in (tmp_path / "processed").iterdir()] == ["bbbp"]


def test_non_numeric_label_names_file_row_column(tmp_path):
    raw = stage_raw("bbbp", tmp_path)
    p = raw / "BBBP.csv"
    lines = p.read_bytes().split(b"\r\n")
    fields = lines[6].split(b",")
    fields[2] = b"yes"
    lines[6] = b",".join(fields)
    p.write_bytes(b"\r\n".join(lines))
    out = tmp_path / "out"
    with pytest.raises(ReadError, match=r"BBBP.csv: row 5, column 'p_np': not a number: 'yes'"):
        prep.prepare_dataset("bbbp", REGISTRY["bbbp"], raw, out)
    assert not out.exists()


def test_missing_labels_dropped_and_qc_list_capped(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["smiles,y"] + [f"C{'C' * i}O,{i}" for i in range(5)] + ["CCN,"] + [f"CC(C{i},1" for i in range(8)]
    (raw / "x.csv").write_text("\n".join(rows) + "\n")
    entry = {"domain": "chemistry", "role": "task", "format": "csv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["y"], "task": "regression", "files": [{"name": "x.csv"}]}
    monkeypatch.setattr(prep, "QC_MAX_LISTED", 3)
    qc = prep.prepare_dataset("x", entry, raw, tmp_path / "out")
    assert qc["rows_in"] == 14 and qc["rows_out"] == 5 and qc["rows_dropped"] == 9
    assert qc["drop_reasons"] == {"invalid SMILES": 8, "missing label": 1}
    assert qc["dropped_listed"] == 3 and qc["dropped_not_listed"] == 6
    assert qc["dropped"][0] == {"file": "x.csv", "source_row": 5, "reason": "missing label 'y'", "value": "CCN"}


def test_load_encoded_round_trip_discrete(tmp_path):
    _, out = run("hiv", tmp_path)
    enc = load_encoded(out)
    df = pq.read_table(out / "table.parquet").to_pandas()
    assert enc.kind == "discrete" and list(enc.ids) == df["id"].tolist()
    for i in (0, 17, len(df) - 1):
        s = bytes(enc.tokens[enc.offsets[i]:enc.offsets[i + 1]]).decode()
        assert s == df["smiles"].iat[i]
    assert enc.lengths().tolist() == df["length"].tolist()
    b = enc.batch(np.array([0, 1]), max_len=512)
    assert b.x.shape[0] == 2 and int(b.x[0, 0]) == df["smiles"].iat[0].encode()[0] + 1


# ------------------------------------------------------------------------------------- corpora

def test_smiles_corpus_shards_parallel_equals_serial(tmp_path):
    q1, o1 = run("moses", tmp_path / "a", threads=1, chunk_size=600)
    q2, o2 = run("moses", tmp_path / "b", threads=2, chunk_size=600)
    assert q1 == q2 and q1["rows_in"] == 2000 and q1["shards"] == 4
    s1 = sorted(p.name for p in (o1 / "shards").iterdir())
    assert s1 == [f"part-{k:05d}.parquet" for k in range(4)] == sorted(p.name for p in (o2 / "shards").iterdir())
    for n in s1:
        assert pq.read_table(o1 / "shards" / n).equals(pq.read_table(o2 / "shards" / n))
    assert not (o1 / "table.parquet").exists()
    enc = load_encoded(o1)
    assert len(enc) == q1["rows_out"] and enc.ids[0] == "moses:0" and enc.ids[-1] == f"moses:{q1['rows_in'] - 1}"
    t = read_table(o1)
    assert t.column("source_row").to_pylist() == list(range(2000))


def test_corpus_with_invalid_smiles_and_rerun_replaces_layout(tmp_path):
    raw = stage_raw("moses", tmp_path)
    import gzip

    p = raw / "train.csv.gz"
    lines = gzip.decompress(p.read_bytes()).split(b"\n")
    lines[11] = b"C1CC(N"      # data row 10: unclosed ring and branch
    lines[31] = b"c1cccc1"     # data row 30: cannot be kekulized
    p.write_bytes(gzip.compress(b"\n".join(lines)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "table.parquet").write_bytes(b"stale")
    (out / "standardize.json").write_text("{}")
    qc = prep.prepare_dataset("moses", REGISTRY["moses"], raw, out, chunk_size=1000)
    assert [(d["source_row"], d["value"]) for d in qc["dropped"]] == [(10, "C1CC(N"), (30, "c1cccc1")]
    assert "kekulize" in qc["dropped"][1]["reason"].lower()
    assert not (out / "table.parquet").exists() and not (out / "standardize.json").exists()
    assert len(load_encoded(out)) == 1998


def test_chembl_zip_corpus(tmp_path):
    qc, out = run("chembl31", tmp_path, threads=2, chunk_size=150)
    assert qc["rows_in"] == 600 and qc["rows_out"] == 600 and qc["shards"] == 6
    t = read_table(out)
    assert t.column("id")[0].as_py() == "chembl31:mini_train.zip:0"
    assert set(t.column("file").to_pylist()) == {"mini_train.zip", "valid.zip", "test.zip"}
    assert len(set(t.column("id").to_pylist())) == 600


def test_uniprot_corpus(tmp_path):
    qc, out = run("uniprot", tmp_path)
    t = read_table(out)
    assert qc["rows_out"] == t.num_rows == 200
    df = t.to_pandas()
    assert df["id"].iat[0] == f"uniprot:{df['accession'].iat[0]}" and df["id"].is_unique
    assert df["seq"].str.fullmatch(r"[A-Z]+").all()
    enc = load_encoded(out)
    assert bytes(enc.tokens[enc.offsets[3]:enc.offsets[4]]).decode() == df["seq"].iat[3]


# ------------------------------------------------------------------------------------ proteins

@pytest.mark.parametrize("name", ["stability", "fluorescence", "remote_homology"])
def test_protein_tasks_keep_file_folds(name, tmp_path):
    qc, out = run(name, tmp_path)
    df = pq.read_table(out / "table.parquet").to_pandas()
    assert qc["folds"] == {"train": 80, "valid": 30, "test": 30}
    for f in REGISTRY[name]["files"]:
        part = df[df["file"] == f["name"]]
        assert (part["fold"] == f["fold"]).all()
        raw = readers.read_csv(MIRROR / f["mirror_path"], ["seq", "label"])
        assert part["seq"].tolist() == raw["seq"].str.upper().tolist()
        assert np.allclose(part["label"].to_numpy(float), raw["label"].astype(float).to_numpy())
    assert df["id"].is_unique
    assert pq.read_schema(out / "table.parquet").field("label").type == (
        pa.int64() if name == "remote_homology" else pa.float64())
    if name == "remote_homology":
        counts = df[df["fold"] == "train"]["label"].value_counts()
        assert (counts >= 5).sum() >= 5  # classes repeat in the fixture


def test_protein_task_needs_fold(tmp_path):
    entry = copy.deepcopy(REGISTRY["stability"])
    del entry["files"][1]["fold"]
    with pytest.raises(prep.PrepareError, match="valid.csv"):
        run("stability", tmp_path, entry)
    assert not (tmp_path / "processed" / "stability").exists()


# --------------------------------------------------------------------------------------- HIGGS

def _higgs_raw(tmp: Path) -> dict[str, tuple]:
    out = {}
    for f in REGISTRY["higgs"]["files"]:
        df, r = readers.read_higgs(MIRROR / f["mirror_path"], f["label"], f["header"], f["sep"])
        out[f["name"]] = (df, r, f)
    return out


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    """Independent duplicate rule of the brief: relative 5e-3 or absolute 1e-3 per feature."""
    d = np.abs(x - y)
    return bool(np.all((d <= 5e-3 * np.maximum(np.abs(x), np.abs(y))) | (d <= 1e-3)))


def test_higgs_dedup_split_and_standardization(tmp_path):
    qc, out = run("higgs", tmp_path)
    t = pq.read_table(out / "table.parquet")
    assert all(t.schema.field(c).type == pa.float32() for c in HIGGS_FEATURES)
    df = t.to_pandas()
    raw = _higgs_raw(tmp_path)
    assert qc["rows_in"] == sum(len(v[0]) for v in raw.values())
    assert qc["rows_out"] == len(df) == qc["rows_in"] - qc["rows_dropped"]
    # the whole test file is kept, in test
    test_name = "h2o_higgs_test_5k_fullprecision.csv"
    assert (df[df["file"] == test_name]["fold"] == "test").all()
    assert (df["fold"] == "test").sum() == len(raw[test_name][0])
    # no two kept rows are the same event; every dropped row has a kept twin with the same label
    X = df[HIGGS_FEATURES].to_numpy(np.float64)
    y = df["label"].to_numpy()
    for i in range(len(df)):
        near = np.flatnonzero(np.all(np.abs(X - X[i]) <= 5e-3 * np.abs(X[i]) + 1e-3, axis=1))
        assert all(j == i or y[j] != y[i] or not _same(X[i], X[j]) for j in near)
    kept = {(r.file, r.source_row) for r in df[["file", "source_row"]].itertuples()}
    dropped = 0
    for name, (d, _, _) in raw.items():
        for r in d.itertuples(index=False):
            if (name, r.source_row) in kept:
                continue
            dropped += 1
            x = d.loc[r.source_row, HIGGS_FEATURES].to_numpy(float)
            twins = [j for j in np.flatnonzero(y == r.label) if _same(x, X[j])]
            assert twins, (name, r.source_row)
    assert dropped == qc["rows_dropped"]
    # LightGBM files (3 decimals) are more precise than the h2o copy (3 significant digits):
    # the h2o copies of LightGBM rows go, the LightGBM copies stay
    assert qc["files"]["h2o_higgs_train_10k.csv"]["rows_dropped"] >= 200
    # train rows that are also in the test file are removed from train (the fixture keeps the
    # h2o / LightGBM copies of one test event and the sas copies of six)
    test_rows = df["file"].to_numpy() == test_name
    in_test = 0
    for name, (d, _, f) in raw.items():
        if f["fold"] != "train":
            continue
        for r in d.itertuples(index=False):
            x = d.loc[r.source_row, HIGGS_FEATURES].to_numpy(float)
            if any(_same(x, X[j]) for j in np.flatnonzero(test_rows & (y == r.label))):
                in_test += 1
                assert (name, r.source_row) not in kept
    assert in_test >= 8
    # valid: 10 % of the train pool, deterministic
    pool = (df["fold"] != "test").sum()
    assert (df["fold"] == "valid").sum() == round(0.1 * pool)
    qc2, out2 = run("higgs", tmp_path / "again")
    assert pq.read_table(out2 / "table.parquet").equals(t)
    # standardization from the train fold only
    st = json.loads((out / "standardize.json").read_text())
    assert st["features"] == HIGGS_FEATURES
    train = df[df["fold"] == "train"][HIGGS_FEATURES].to_numpy(np.float64)
    assert np.allclose([st["mean"][c] for c in HIGGS_FEATURES], train.mean(0))
    assert np.allclose([st["std"][c] for c in HIGGS_FEATURES], train.std(0))
    enc = load_encoded(out)
    assert enc.kind == "continuous" and enc.values.shape == (len(df), 28)
    assert list(enc.ids) == df["id"].tolist()
    tr = enc.values[(df["fold"] == "train").to_numpy()]
    assert np.allclose(tr.mean(0), 0, atol=1e-4) and np.allclose(tr.std(0), 1, atol=1e-3)
    assert not (out / "vocab.json").exists()


def test_higgs_synthetic_precisions_and_layouts(tmp_path):
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(1.0, 0.8, size=(6, 28))) + 0.01
    X[:, 8] = 0.0
    y = np.array([1, 0, 1, 0, 1, 1])
    raw = tmp_path / "raw"
    raw.mkdir()

    def full(i):
        return ",".join(f"{v:.10f}" for v in X[i])

    # test file: rows 0, 1 at full precision, label first, no header
    (raw / "test.csv").write_text("".join(f"{y[i]},{full(i)}\n" for i in (0, 1)))
    # train A: 3 significant digits, CRLF, header, label first: rows 1 (also in test), 2, 3, 4
    hdr = "response," + ",".join(f"x{k}" for k in range(1, 29))
    (raw / "a.csv").write_bytes(("\r\n".join([hdr] + [f"{y[i]:.2E}," + ",".join(f"{v:.2E}" for v in X[i])
                                                      for i in (1, 2, 3, 4)]) + "\r\n").encode())
    # train B: 3 decimals, tab, label first, no header: rows 2, 3 and 5
    (raw / "b.tsv").write_text("".join(f"{y[i]}\t" + "\t".join(f"{v:.3f}" for v in X[i]) + "\n" for i in (2, 3, 5)))
    # train C: full precision, label last, UCI header: row 3 and row 5 with the other label
    names = ",".join(c.replace("-", "") for c in HIGGS_FEATURES) + ",label"
    (raw / "c.csv").write_text(names + "\n" + f"{full(3)},{y[3]}\n" + f"{full(5)},{1 - y[5]}\n")
    entry = {"domain": "physics", "role": "task", "format": "higgs", "input": {"kind": "numeric"},
             "labels": ["label"], "task": "binary", "split": {"kind": "fixed", "valid_fraction": 0.0},
             "files": [{"name": "a.csv", "fold": "train", "label": "first", "header": True, "sep": ","},
                       {"name": "test.csv", "fold": "test", "label": "first", "header": False, "sep": ","},
                       {"name": "b.tsv", "fold": "train", "label": "first", "header": False, "sep": "\t"},
                       {"name": "c.csv", "fold": "train", "label": "last", "header": True, "sep": ","}]}
    qc = prep.prepare_dataset("h", entry, raw, tmp_path / "out")
    df = pq.read_table(tmp_path / "out" / "table.parquet").to_pandas()
    got = sorted(zip(df["file"], df["source_row"], df["fold"]))
    assert got == sorted([
        ("test.csv", 0, "test"), ("test.csv", 1, "test"),   # event 1 stays in test, its train copy goes
        ("b.tsv", 0, "train"),                              # event 2: 3 decimals beat 3 significant digits
        ("c.csv", 0, "train"),                              # event 3: full precision wins
        ("a.csv", 3, "train"),                              # event 4: only copy
        ("b.tsv", 2, "train"), ("c.csv", 1, "train"),       # event 5: labels differ -> not duplicates
    ])
    assert qc["rows_dropped"] == 4 and qc["drop_reasons"] == {"duplicate row": 4}
    row = df[(df["file"] == "c.csv") & (df["source_row"] == 0)]
    assert np.allclose(row[HIGGS_FEATURES].to_numpy(np.float64)[0], X[3], rtol=1e-6)
