"""Property tests for the task sources (csv / tsv / parquet / sdf / fasta, plain, gzip or archive
member): a correct table, or one ReadError naming the source — never another exception."""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byod_files as bf
from pipeline_src.data import readers, sources
from pipeline_src.data.readers import ReadError

SETTINGS = settings(max_examples=int(os.environ.get("PROP_N", 40)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"), max_size=12)


@contextmanager
def scratch():
    d = Path(tempfile.mkdtemp(prefix="props-src-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_table(rows: list[list[str]], sep: str, newline: str) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out, delimiter=sep, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    for r in rows:
        w.writerow(r)
    return out.getvalue().encode("utf-8")


@SETTINGS
@given(ncol=st.integers(1, 4), data=st.data(), sep=st.sampled_from([",", "\t", ";", "|"]),
       header=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]), container=st.sampled_from(bf.CONTAINERS))
def test_delimited_round_trip_in_any_container(ncol, data, sep, header, newline, container):
    body = data.draw(st.lists(st.lists(CELL, min_size=ncol, max_size=ncol), max_size=8))
    # a record that is one empty field is written as a blank line's twin ('""'); skip the ambiguous case
    body = [r for r in body if not (ncol == 1 and r[0] == "")]
    names = [f"c{j}" for j in range(ncol)]
    raw = write_table(([names] if header else []) + body, sep, newline)
    with scratch() as d:
        path, member = bf.write_source(raw, "t.csv", container, d)
        f = {"sep": sep, "header": header, **({"member": member} if member else {})}
        df = sources.read_frame(path, "csv", f)
    cols = names if header else [f"col{j + 1}" for j in range(ncol)]
    if not body:
        assert len(df) == 0
        return
    assert list(df.columns) == ["source_row", *cols]
    got = df[cols].astype(str).values.tolist()
    assert got == [[c.replace("\r", "") for c in r] for r in body]


@SETTINGS
@given(frac=st.floats(0.0, 1.0), container=st.sampled_from(bf.CONTAINERS), fmt=st.sampled_from(["csv", "sdf", "fasta", "parquet"]))
def test_truncated_sources_give_a_prefix_or_a_read_error(frac, container, fmt):
    mol = bf.molecules(8)
    if fmt == "csv":
        full = bf.csv_bytes(mol[["smiles", "p_np", "fold"]])
    elif fmt == "sdf":
        full = bf.sdf_bytes(mol["smiles"].tolist(), {"p_np": mol["p_np"].tolist()})
    elif fmt == "parquet":
        full = bf.parquet_bytes(mol[["smiles", "p_np"]])
    else:
        seq = bf.sequences(8)
        full = bf.fasta_bytes([f"{i} y={y}" for i, y in zip(seq["id"], seq["stability"])], seq["seq"].tolist())
    cut = full[: int(len(full) * frac)]
    with scratch() as d:
        ref_path, ref_member = bf.write_source(full, f"x.{fmt}", "plain", d / "ref")
        ref = sources.read_frame(ref_path, fmt, {})
        if container in ("zip", "tar.gz"):   # the archive is whole, its member is cut
            path, member = bf.write_source(cut, f"x.{fmt}", container, d)
        else:                                # the file itself is cut (for gz: the compressed bytes)
            path, member = bf.write_source(full, f"x.{fmt}", container, d)
            path.write_bytes(path.read_bytes()[: max(0, int(path.stat().st_size * frac))])
        try:
            df = sources.read_frame(path, fmt, {"member": member} if member else {})
        except ReadError as e:
            assert str(path) in str(e)
            return
    # a truncated text file may still parse: then it is a prefix of the records, the last maybe cut
    assert len(df) <= len(ref)
    if len(df) > 1:
        key = "seq" if fmt == "fasta" else ("smiles" if fmt in ("csv", "parquet") else readers.MOL_BLOCK)
        assert df[key].iloc[:-1].tolist() == ref[key].iloc[: len(df) - 1].tolist()


@SETTINGS
@given(blob=st.binary(max_size=300), fmt=st.sampled_from(list(sources.TABLE_FORMATS)),
       container=st.sampled_from(["plain", "gz", "zip"]))
def test_arbitrary_bytes_never_crash(blob, fmt, container):
    with scratch() as d:
        path, member = bf.write_source(blob, f"junk.{fmt}", container, d)
        try:
            sources.read_frame(path, fmt, {"member": member} if member else {})
        except ReadError:
            pass


def test_fasta_patterns_name_the_record_that_does_not_match(tmp_path):
    data = bf.fasta_bytes(["a1 y=1.5 set=train", "a2 y=2", "a3 y=3 set=test"], ["MKV", "MKT", "MKL"])
    with pytest.raises(ReadError, match=r"row 1 \(record 2\), column 'header': label_pattern .* does not match 'a2 y=2'"):
        readers.read_fasta_frame(data, "f.fasta", label_pattern=r"y=(?P<y>\S+) set=(?P<set>\w+)")
    df = readers.read_fasta_frame(data, "f.fasta", id_pattern=r"^a(\d)", label_pattern=r"y=(?P<y>\S+)(?: set=(?P<set>\w+))?")
    assert df["id"].tolist() == ["1", "2", "3"] and df["set"].tolist() == ["train", "", "test"]
    with pytest.raises(ReadError, match="not a valid regular expression"):
        readers.read_fasta_frame(data, "f.fasta", label_pattern=r"(?P<y>")


def test_whitespace_separated_smi_file():
    df = readers.read_delimited(b"CCO  ethanol 1\nc1ccccc1\tbenzene  0\n\n", "x.smi", sep="whitespace", header=False)
    assert df[["col1", "col2", "col3"]].values.tolist() == [["CCO", "ethanol", "1"], ["c1ccccc1", "benzene", "0"]]
    with pytest.raises(ReadError, match=r"x.smi: row 1 \(line 2\): 2 field\(s\), expected 3"):
        readers.read_delimited(b"CCO ethanol 1\nCC ethane\n", "x.smi", sep="whitespace", header=False)
