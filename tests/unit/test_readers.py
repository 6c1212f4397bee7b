"""Readers: CSV (LF / CRLF / gzip), zip of lines, gzip FASTA, the HIGGS layouts."""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_src.data import readers
from pipeline_src.data.readers import HIGGS_COLUMNS, HIGGS_FEATURES, ReadError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MIRROR = FIXTURES / "mirror"
REGISTRY = yaml.safe_load((FIXTURES / "datasets.yaml").read_text())["datasets"]


def fixture_file(dataset: str, name: str) -> tuple[Path, dict]:
    for f in REGISTRY[dataset]["files"]:
        if f["name"] == name:
            return MIRROR / f["mirror_path"], f
    raise KeyError(name)


# ---------------------------------------------------------------------------------------- HIGGS

HIGGS_FILES = ["h2o_higgs_train_10k.csv", "h2o_higgs_test_5k_fullprecision.csv", "sas_higgs.csv",
               "lightgbm_binary.train", "lightgbm_binary.test"]


def raw_fields(path: Path, f: dict, row: int) -> list[str]:
    lines = path.read_bytes().decode().splitlines()
    if f["header"]:
        lines = lines[1:]
    return lines[row].split(f["sep"])


@pytest.mark.parametrize("name", HIGGS_FILES)
def test_higgs_layout_values_and_label_position(name):
    path, f = fixture_file("higgs", name)
    df, rounding = readers.read_higgs(path, f["label"], f["header"], f["sep"])
    assert list(df.columns) == ["source_row", *HIGGS_COLUMNS]
    assert df["label"].dtype == np.int64 and set(df["label"]) <= {0, 1}
    for row in (0, 5, len(df) - 1):
        fields = raw_fields(path, f, row)
        assert len(fields) == 29
        lab, feats = (fields[0], fields[1:]) if f["label"] == "first" else (fields[-1], fields[:-1])
        assert df["label"].iat[row] == int(float(lab))
        assert df.loc[row, HIGGS_FEATURES].to_numpy(dtype=float).tolist() == [float(x) for x in feats]
        assert df["source_row"].iat[row] == row


def test_higgs_same_event_in_three_layouts():
    # UCI row 1 is row 0 of the h2o 10k file (3 significant digits, CRLF, header) and of LightGBM's
    # binary.train (3 decimals, tab, no header); the label is first in both.
    a, fa = fixture_file("higgs", "h2o_higgs_train_10k.csv")
    b, fb = fixture_file("higgs", "lightgbm_binary.train")
    da, ra = readers.read_higgs(a, fa["label"], fa["header"], fa["sep"])
    db, rb = readers.read_higgs(b, fb["label"], fb["header"], fb["sep"])
    assert da["label"].iat[0] == db["label"].iat[0] == 1
    xa, xb = da.loc[0, HIGGS_FEATURES].to_numpy(float), db.loc[0, HIGGS_FEATURES].to_numpy(float)
    assert np.all(np.abs(xa - xb) <= 5e-3 * np.abs(xa) + 5e-4 + 1e-9)
    assert ra.rel == pytest.approx(5e-3) and ra.abs == 0
    assert rb.rel == 0 and rb.abs == pytest.approx(5e-4)


def test_higgs_rounding_of_full_precision_files():
    for name in ("h2o_higgs_test_5k_fullprecision.csv", "sas_higgs.csv"):
        path, f = fixture_file("higgs", name)
        _, r = readers.read_higgs(path, f["label"], f["header"], f["sep"])
        assert r.error_at_one() < 1e-7


def test_higgs_sas_header_is_mapped_to_uci_names():
    path, f = fixture_file("higgs", "sas_higgs.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[-1] == "label" and header[8] == "jet_1_btag"
    df, _ = readers.read_higgs(path, "last", True, ",")
    assert "jet_1_b-tag" in df.columns and "jet_1_btag" not in df.columns


def test_higgs_errors_name_file_row_column(tmp_path):
    path, f = fixture_file("higgs", "lightgbm_binary.test")
    lines = path.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    lines[3] = "yes" + lines[3][1:]
    bad.write_text("".join(lines))
    with pytest.raises(ReadError) as e:
        readers.read_higgs(bad, "first", False, "\t")
    msg = str(e.value)
    assert "bad.tsv" in msg and "row 3" in msg and "label" in msg and "'yes'" in msg

    lines = path.read_text().splitlines(keepends=True)
    fields = lines[2].split("\t")
    fields[5] = "n/a"
    lines[2] = "\t".join(fields)
    bad.write_text("".join(lines))
    with pytest.raises(ReadError, match=r"bad.tsv: row 2, column 'missing_energy_phi \(field 6\)'"):
        readers.read_higgs(bad, "first", False, "\t")

    with pytest.raises(ReadError, match="expected 29 columns"):
        readers.read_higgs(path, "first", False, ",")  # wrong separator

    wrong = tmp_path / "wrong.csv"
    sas, _ = fixture_file("higgs", "sas_higgs.csv")
    wrong.write_text(sas.read_text())
    with pytest.raises(ReadError, match="UCI order"):
        readers.read_higgs(wrong, "first", True, ",")  # the label is last in this file


def test_infer_rounding():
    assert readers.infer_rounding(["1.23E-01", "-4.56E+00", "0.00E+00"]) == readers.Rounding(5e-3, 0.0)
    assert readers.infer_rounding(["0.123", "1.000", "-0.500"]) == readers.Rounding(0.0, 5e-4)
    r = readers.infer_rounding(["0.123456789", "1.23456789", "12.3456789", "0"])
    assert r.rel == pytest.approx(5e-9)


# ------------------------------------------------------------------------------------------ CSV

def test_csv_crlf_lf_and_gzip_read_the_same(tmp_path):
    path, _ = fixture_file("bbbp", "BBBP.csv")
    raw = path.read_bytes()
    assert b"\r\n" in raw
    lf = tmp_path / "lf.csv"
    lf.write_bytes(raw.replace(b"\r\n", b"\n"))
    gz = tmp_path / "crlf.csv.gz"
    gz.write_bytes(gzip.compress(raw))
    cols = ["smiles", "p_np", "name"]
    a, b, c = (readers.read_csv(p, cols) for p in (path, lf, gz))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    assert not a["smiles"].str.contains("\r").any() and not a["name"].str.contains("\r").any()
    assert a["source_row"].tolist() == list(range(len(a)))
    assert len(a) == len(raw.splitlines()) - 1


def test_csv_quoted_fields():
    path, _ = fixture_file("freesolv", "SAMPL.csv")
    df = readers.read_csv(path, ["iupac", "smiles", "expt"])
    assert df["iupac"].iat[0] == "4-methoxy-N,N-dimethyl-benzamide"


def test_csv_missing_column_names_file_and_column():
    path, _ = fixture_file("bbbp", "BBBP.csv")
    with pytest.raises(ReadError) as e:
        readers.read_csv(path, ["smiles", "no_such_label"])
    assert "BBBP.csv" in str(e.value) and "no_such_label" in str(e.value) and "p_np" in str(e.value)


def test_numeric_column_errors_name_row_and_column():
    s = pd.Series(["1", "0", " 1 ", "", "x1"], dtype="str")
    rows = np.arange(10, 15)
    with pytest.raises(ReadError, match=r"f.csv: row 14, column 'p_np': not a number: 'x1'"):
        readers.numeric_column(s, rows, "f.csv", "p_np")
    out = readers.numeric_column(s.iloc[:4], rows[:4], "f.csv", "p_np", integer=True)
    assert out[:3].tolist() == [1.0, 0.0, 1.0] and np.isnan(out[3])
    with pytest.raises(ReadError, match="row 11, column 'y': not an integer"):
        readers.numeric_column(pd.Series(["1", "0.5"]), rows[:2], "f.csv", "y", integer=True)


# ------------------------------------------------------------------------------------ zip, FASTA

def test_lines_zip_fixture_and_errors(tmp_path):
    path, _ = fixture_file("chembl31", "valid.zip")
    df = readers.read_lines_zip(path)
    assert len(df) == 200 and df["source_row"].tolist() == list(range(200))
    with zipfile.ZipFile(path) as zf:
        first = zf.read(zf.infolist()[0]).decode().split("\n")[0]
    assert df["text"].iat[0] == first

    crlf = tmp_path / "crlf.zip"
    with zipfile.ZipFile(crlf, "w") as zf:
        zf.writestr("x.txt", "CCO\r\nc1ccccc1\r\n")
    assert readers.read_lines_zip(crlf)["text"].tolist() == ["CCO", "c1ccccc1"]
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a", "C\n")
        zf.writestr("b", "N\n")
    with pytest.raises(ReadError, match="two.zip: expected exactly one member"):
        readers.read_lines_zip(two)


def test_fasta_multiline_records_and_headers(tmp_path):
    text = (">sp|P12345|ABC_ECOLI Protein A OS=Escherichia coli OX=83333\n"
            "MKV\nLLA\n\n"
            ">tr|A0A0B1|A0A0B1_ECOLI Uncharacterized OS=E. coli\r\n"
            "mqrs\r\nT\r\n"
            ">plain_id some description\n"
            "ACDE\n"
            ">sp|Q99999-2|ISO_HUMAN Isoform 2\n")
    p = tmp_path / "x.fasta.gz"
    p.write_bytes(gzip.compress(text.encode()))
    df = readers.read_fasta_gz(p)
    assert df["accession"].tolist() == ["P12345", "A0A0B1", "plain_id", "Q99999-2"]
    assert df["name"].tolist() == ["ABC_ECOLI", "A0A0B1_ECOLI", "", "ISO_HUMAN"]
    assert df["seq"].tolist() == ["MKVLLA", "mqrsT", "ACDE", ""]
    assert df["source_row"].tolist() == [0, 1, 2, 3]

    bad = tmp_path / "bad.fasta.gz"
    bad.write_bytes(gzip.compress(b"MKV\n>sp|P1|X\nMK\n"))
    with pytest.raises(ReadError, match="bad.fasta.gz: line 1"):
        readers.read_fasta_gz(bad)


def test_fasta_fixture_matches_independent_count():
    path, _ = fixture_file("uniprot", "UP000000625-E.coli.fasta.gz")
    text = gzip.decompress(path.read_bytes()).decode()
    df = readers.read_fasta_gz(path)
    assert len(df) == text.count(">") == 100
    residues = sum(len(ln.strip()) for ln in text.splitlines() if not ln.startswith(">"))
    assert df["seq"].str.len().sum() == residues
    assert df["accession"].str.fullmatch(r"[A-Z0-9]+(-\d+)?").all()
    assert df["header"].str.match(r"(sp|tr)\|").all()
