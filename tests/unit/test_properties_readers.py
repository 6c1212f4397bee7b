"""Property tests: every reader, fed damaged or unusual files, gives a correct table or one clear
error of the package (naming file, row and column where they apply) — never another exception,
and ``prepare`` never leaves a partly written output behind."""
from __future__ import annotations

import csv
import gzip
import io
import math
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline_src.data import readers
from pipeline_src.data.prepare import PrepareError, prepare_dataset
from pipeline_src.data.readers import HIGGS_COLUMNS, HIGGS_FEATURES, ReadError

SETTINGS = settings(max_examples=int(__import__("os").environ.get("PROP_N", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=int(__import__("os").environ.get("PROP_N", 20)) // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextmanager
def scratch():
    d = Path(tempfile.mkdtemp(prefix="props-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def truncate(data: bytes, frac: float | None) -> bytes:
    return data if frac is None else data[: int(len(data) * frac)]


def encode(text: str, encoding: str) -> bytes | None:
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return None


def assert_clean_error(err: Exception, path: Path) -> None:
    assert isinstance(err, (ReadError, PrepareError)), repr(err)
    msg = str(err)
    assert str(path) in msg or path.name in msg, msg
    assert "\n" not in msg.strip() or "Traceback" not in msg


def nothing_new(parent: Path, before: set[str]) -> None:
    """No new entry (output folder, staging folder, temp file) beside the outputs."""
    assert {p.name for p in parent.iterdir()} == before


# ------------------------------------------------------------------------------------------ CSV

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "C1CC", "xyz", "", "N#N", "CC,O", 'C"C', "O=C=O", "CCÖ"]
LABEL = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "abc", "1e400", "0x10", "1,5"]),
)
ROWS = st.lists(st.tuples(st.sampled_from(SMILES), LABEL), max_size=12)


def write_csv(rows, header, newline, encoding) -> bytes | None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return encode(buf.getvalue(), encoding)


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s.strip()))
    except ValueError:
        return False


@SETTINGS
@given(rows=ROWS, newline=st.sampled_from(["\n", "\r\n"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
       layout=st.sampled_from(["ok", "missing_label", "extra", "reordered", "duplicate"]),
       cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_csv_reader_table_or_clear_error(rows, newline, encoding, layout, cut):
    header = {"ok": ["smiles", "y"], "missing_label": ["smiles", "z"], "extra": ["id", "smiles", "y", "w"],
              "reordered": ["y", "smiles"], "duplicate": ["smiles", "y", "y"]}[layout]
    full = []
    for s, y in rows:
        rec = {"id": "i", "smiles": s, "y": y, "z": y, "w": "0"}
        full.append([rec[h] for h in header])
    data = write_csv(full, header, newline, encoding)
    assume(data is not None)
    data = truncate(data, cut)
    with scratch() as d:
        path = d / "t.csv"
        path.write_bytes(data)
        try:
            df = readers.read_csv(path, ["smiles", "y"])
        except Exception as e:  # noqa: BLE001 - the property is about which exceptions escape
            assert_clean_error(e, path)
            if cut is None and layout == "missing_label" and encoding != "utf-16" and "Ö" not in str(rows):
                assert "'y'" in str(e)
            return
        assert list(df.columns) == ["source_row", "smiles", "y"]
        assert df["source_row"].tolist() == list(range(len(df)))
        if cut is None:
            assert encoding != "utf-16", "UTF-16 bytes were read"
            non_ascii = any(ord(ch) > 127 for s, _ in rows for ch in s)
            if encoding == "latin-1" and non_ascii:
                # bytes that are not UTF-8 must not be read as something else
                pytest.fail("latin-1 bytes were accepted as UTF-8")
            assert df["smiles"].tolist() == [s for s, _ in rows]
            assert df["y"].tolist() == [y for _, y in rows]
            try:
                vals = readers.numeric_column(df["y"], df["source_row"].to_numpy(), path, "y")
            except ReadError as e:
                bad = [i for i, (_, y) in enumerate(rows) if y.strip() and not _is_number(y)]
                assert bad, str(e)
                assert f"row {bad[0]}" in str(e) and "'y'" in str(e) and str(path) in str(e)
                return
            for v, (_, y) in zip(vals, rows):
                assert (math.isnan(v) and not y.strip()) or v == float(y)
        else:
            n_lines = len(rows)
            assert len(df) <= n_lines
            # every row but a truncated last one is read exactly
            for i in range(max(0, len(df) - 1)):
                assert df["smiles"].iat[i] == rows[i][0]


@SLOW
@given(rows=st.lists(st.tuples(st.sampled_from(SMILES[:-1]), LABEL), max_size=10),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_prepare_task_csv_table_or_clear_error_and_nothing_written(rows, newline, bom, cut):
    data = write_csv([list(r) for r in rows], ["smiles", "y"], newline, "utf-8-sig" if bom else "utf-8")
    data = truncate(data, cut)
    entry = {"domain": "chemistry", "role": "task", "format": "csv", "input": {"column": "smiles", "kind": "smiles"},
             "labels": ["y"], "task": "regression", "metric": "rmse", "files": [{"name": "t.csv"}]}
    with scratch() as d:
        raw = d / "raw"
        raw.mkdir()
        (raw / "t.csv").write_bytes(data)
        parent = d / "processed"
        parent.mkdir()
        before = {p.name for p in parent.iterdir()}
        try:
            qc = prepare_dataset("toy", entry, raw, parent / "toy")
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, raw / "t.csv")
            nothing_new(parent, before)
            return
        t = pq.read_table(parent / "toy" / "table.parquet")
        assert qc["rows_out"] == t.num_rows == qc["rows_in"] - qc["rows_dropped"]
        assert len(set(t.column("id").to_pylist())) == t.num_rows  # ids unique
        assert all(math.isfinite(v) for v in t.column("label").to_pylist())
        if cut is None:
            valid = {"CCO", "c1ccccc1", "CC(=O)O", "N#N", "O=C=O"}
            expected = sum(1 for s, y in rows if y.strip() and s in valid)
            assert t.num_rows == expected
        assert sorted(p.name for p in parent.iterdir()) == ["toy"]


# ---------------------------------------------------------------------------------------- FASTA

AA = "ACDEFGHIKLMNPQRSTVWY"
HEADER = st.one_of(
    st.tuples(st.sampled_from(["sp", "tr"]), st.sampled_from(["P1", "P2", "Q3", "A0A0"]), st.just("N_HUMAN desc"))
    .map(lambda t: f"{t[0]}|{t[1]}|{t[2]}"),
    st.sampled_from(["plain1 some text", "plain1", "", "  ", "sp|P9|", "über"]),
)
SEQ = st.one_of(st.text(AA + AA.lower(), max_size=200), st.just(""), st.text(AA, min_size=3000, max_size=4000))


@SETTINGS
@given(records=st.lists(st.tuples(HEADER, SEQ), max_size=8), newline=st.sampled_from(["\n", "\r\n"]),
       width=st.sampled_from([60, 80, 10**6]), encoding=st.sampled_from(["utf-8", "latin-1"]),
       lead=st.sampled_from(["", "\n", "ACD\n"]), cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_fasta_reader_and_protein_corpus(records, newline, width, encoding, lead, cut):
    lines = [lead.rstrip("\n")] if lead else []
    for h, s in records:
        lines.append(f">{h}")
        lines += [s[i:i + width] for i in range(0, len(s), width)]
    text = newline.join(lines) + newline
    raw_bytes = encode(text, encoding)
    assume(raw_bytes is not None)
    gz = truncate(gzip.compress(raw_bytes, mtime=0), cut)
    entry = {"domain": "proteins", "role": "corpus", "format": "fasta_gz", "input": {"kind": "protein"},
             "files": [{"name": "p.fasta.gz"}]}
    with scratch() as d:
        raw = d / "raw"
        raw.mkdir()
        path = raw / "p.fasta.gz"
        path.write_bytes(gz)
        try:
            df = readers.read_fasta_gz(path)
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, path)
            if cut is None and encoding == "utf-8" and lead not in ("ACD\n",):
                pytest.fail(f"a valid FASTA was refused: {e}")
        else:
            assert cut is None or len(df) <= len(records)
            if cut is None:
                assert lead != "ACD\n"
                assert len(df) == len(records)
                assert df["seq"].tolist() == [s for _, s in records]
                assert df["header"].tolist() == [h.strip() for h, _ in records]
        parent = d / "processed"
        parent.mkdir()
        try:
            qc = prepare_dataset("prot", entry, raw, parent / "prot", chunk_size=3)
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, path)
            nothing_new(parent, set())
            return
        t = pa.concat_tables([pq.read_table(p) for p in sorted((parent / "prot" / "shards").glob("*.parquet"))]) \
            if qc["rows_out"] else None
        ids = t.column("id").to_pylist() if t is not None else []
        assert len(ids) == len(set(ids)) == qc["rows_out"]
        if t is not None:
            assert min(t.column("length").to_pylist()) > 0  # no empty sequence kept
            assert t.column("seq").to_pylist() == [s.upper() for s in t.column("seq").to_pylist()]


# ---------------------------------------------------------------------------------------- HIGGS

FEATURE = st.floats(-1e3, 1e3, allow_nan=False, width=32)
HIGGS_ROW = st.tuples(st.sampled_from([0, 1]), st.lists(FEATURE, min_size=28, max_size=28))
DAMAGE = st.sampled_from(["none", "bad_label", "two_label", "empty_label", "nan_feature", "inf_feature",
                          "empty_feature", "text_feature", "short_row", "long_row", "missing_column"])


@SETTINGS
@given(rows=st.lists(HIGGS_ROW, min_size=1, max_size=10), label=st.sampled_from(["first", "last"]),
       header=st.booleans(), sep=st.sampled_from([",", "\t"]), newline=st.sampled_from(["\n", "\r\n"]),
       bom=st.booleans(), damage=DAMAGE, where=st.integers(0, 9), col=st.integers(0, 27),
       cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_higgs_reader_table_or_error_naming_row_and_column(rows, label, header, sep, newline, bom, damage,
                                                           where, col, cut):
    where = where % len(rows)
    cells = []
    for y, x in rows:
        feats = [repr(float(v)) for v in x]
        cells.append([str(y), *feats] if label == "first" else [*feats, str(y)])
    lab_pos = 0 if label == "first" else 28
    feat_pos = (col + 1) if label == "first" else col
    r = cells[where]
    if damage == "bad_label":
        r[lab_pos] = "x"
    elif damage == "two_label":
        r[lab_pos] = "2"
    elif damage == "empty_label":
        r[lab_pos] = ""
    elif damage in ("nan_feature", "inf_feature", "empty_feature", "text_feature"):
        r[feat_pos] = {"nan_feature": "nan", "inf_feature": "inf", "empty_feature": "", "text_feature": "1.2.3"}[damage]
    elif damage == "short_row":
        del r[feat_pos]
    elif damage == "long_row":
        r.append("0.5")
    elif damage == "missing_column":
        for rr in cells:
            del rr[feat_pos]
    names = HIGGS_COLUMNS if label == "first" else [*HIGGS_FEATURES, "label"]
    if damage == "missing_column":
        names = [n for i, n in enumerate(names) if i != feat_pos]
    lines = ([sep.join(names)] if header else []) + [sep.join(c) for c in cells]
    data = (("\ufeff" if bom else "") + newline.join(lines) + newline).encode("utf-8")
    data = truncate(data, cut)
    with scratch() as d:
        raw = d / "raw"
        raw.mkdir()
        path = raw / "h.csv"
        path.write_bytes(data)
        _check_higgs_read(path, rows, label, header, sep, damage, where, cut)
        entry = {"domain": "physics", "role": "task", "format": "higgs", "input": {"kind": "numeric"},
                 "labels": ["label"], "task": "binary", "metric": "accuracy", "split": {"valid_fraction": 0.2},
                 "files": [{"name": "h.csv", "fold": "train", "label": label, "header": header, "sep": sep}]}
        parent = d / "processed"
        parent.mkdir()
        try:
            qc = prepare_dataset("hg", entry, raw, parent / "hg")
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, path)
            nothing_new(parent, set())
            return
        t = pq.read_table(parent / "hg" / "table.parquet")
        assert t.num_rows == qc["rows_out"] and len(set(t.column("id").to_pylist())) == t.num_rows
        assert set(t.column("fold").to_pylist()) <= {"train", "valid"}


def _check_higgs_read(path, rows, label, header, sep, damage, where, cut):
    try:
        df, _ = readers.read_higgs(path, label=label, header=header, sep=sep)
    except Exception as e:  # noqa: BLE001
        assert_clean_error(e, path)
        if cut is None:
            assert damage != "none", f"a valid file was refused: {e}"
            if damage in ("bad_label", "two_label", "empty_label", "nan_feature", "inf_feature",
                          "empty_feature", "text_feature"):
                assert f"row {where}" in str(e), str(e)
                assert "column" in str(e)
        return
    assert list(df.columns) == ["source_row", *HIGGS_COLUMNS]
    if cut is None:
        assert damage == "none", f"damage {damage} was not detected"
        assert df["label"].tolist() == [y for y, _ in rows]
        X = df[HIGGS_FEATURES].to_numpy()
        assert np.array_equal(X, np.array([[float(v) for v in x] for _, x in rows]))
    else:
        assert len(df) <= len(rows)
        assert np.isfinite(df[HIGGS_FEATURES].to_numpy()).all()
        assert df["label"].isin([0, 1]).all()


# -------------------------------------------------------------------------------------- Parquet

@SETTINGS
@given(seqs=st.lists(st.binary(max_size=40), max_size=12), cut=st.one_of(st.none(), st.floats(0.0, 0.99)),
       drop=st.sampled_from([None, "id", "tokens"]))
def test_parquet_reader_table_or_clear_error(seqs, cut, drop):
    from pipeline_src.data.prepare import tokens_array

    texts = [s.decode("latin-1") for s in seqs]
    toks, lengths = tokens_array(texts)
    cols = {"id": pa.array([f"x:{i}" for i in range(len(texts))], pa.string()), "tokens": toks,
            "length": pa.array(lengths, pa.int32())}
    if drop:
        del cols[drop]
    table = pa.table(cols)
    with scratch() as d:
        path = d / "table.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        path.write_bytes(truncate(buf.getvalue(), cut))
        try:
            got = readers.read_parquet(path, ["id", "tokens"])
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, path)
            assert cut is not None or drop is not None
            if cut is None:
                assert repr(drop) in str(e)
            return
        assert cut is None and drop is None
        assert got.column("id").to_pylist() == [f"x:{i}" for i in range(len(texts))]
        assert [bytes(t) for t in got.column("tokens").to_pylist()] == [t.encode("utf-8") for t in texts]


@SETTINGS
@given(seqs=st.lists(st.text(max_size=30), min_size=1, max_size=12), max_len=st.integers(1, 16))
def test_encoded_round_trip_and_truncation_to_max_len(seqs, max_len):
    from pipeline_src.data.encode import load_encoded
    from pipeline_src.data.prepare import tokens_array

    toks, lengths = tokens_array(seqs)
    table = pa.table({"id": [f"x:{i}" for i in range(len(seqs))], "tokens": toks, "length": pa.array(lengths, pa.int32())})
    with scratch() as d:
        pq.write_table(table, d / "table.parquet")
        enc = load_encoded(d)
        batch = enc.batch(np.arange(len(seqs)), max_len)
        for i, s in enumerate(seqs):
            b = s.encode("utf-8")[:max_len]
            row = batch.x[i].tolist() if hasattr(batch, "x") else batch[0][i].tolist()
            assert row[: len(b)] == [c + 1 for c in b]
            assert all(v == 0 for v in row[len(b):])


# ------------------------------------------------------------------------------ zip of lines

@SETTINGS
@given(lines=st.lists(st.text(alphabet="CNOc1()=#[]@+-\u00e9", max_size=30), max_size=20),
       newline=st.sampled_from(["\n", "\r\n"]), members=st.integers(0, 2), encoding=st.sampled_from(["utf-8", "latin-1"]),
       cut=st.one_of(st.none(), st.floats(0.0, 0.99)))
def test_lines_zip_reader_table_or_clear_error(lines, newline, members, encoding, cut):
    import zipfile

    payload = encode(newline.join(lines) + (newline if lines else ""), encoding)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in range(members):
            zf.writestr(f"m{k}.txt", payload)
    with scratch() as d:
        path = d / "c.zip"
        path.write_bytes(truncate(buf.getvalue(), cut))
        try:
            df = readers.read_lines_zip(path)
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e, path)
            non_utf8 = encoding == "latin-1" and any("\u00e9" in ln for ln in lines)
            assert cut is not None or members != 1 or non_utf8, str(e)
            return
        assert cut is None and members == 1
        assert df["text"].tolist() == [ln for ln in lines] and df["source_row"].tolist() == list(range(len(lines)))
