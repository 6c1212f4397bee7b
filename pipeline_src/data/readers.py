"""Readers for the raw source formats (DESIGN §2, ``config/datasets.yaml`` ``format``).

Each reader returns a :class:`pandas.DataFrame` with a ``source_row`` column (int64, the 0-based
data row of the record in the raw file: header lines are not counted) and raises
:class:`ReadError` whose message names the file, and where it applies the row and the column.

* :func:`read_csv` — comma-separated text, LF or CRLF, optionally gzip (inferred from ``.gz``);
* :func:`read_lines_zip` — a zip holding one member with one record per line, no header;
* :func:`read_fasta_gz` — gzip FASTA with multi-line records (UniProt headers);
* :func:`read_higgs` — the HIGGS layouts (label first or last, header or none, tab or comma,
  any precision) normalized to the UCI column names, with the file's rounding.
"""
from __future__ import annotations

import csv
import gzip
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

HIGGS_FEATURES = [
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet_1_pt", "jet_1_eta", "jet_1_phi", "jet_1_b-tag",
    "jet_2_pt", "jet_2_eta", "jet_2_phi", "jet_2_b-tag",
    "jet_3_pt", "jet_3_eta", "jet_3_phi", "jet_3_b-tag",
    "jet_4_pt", "jet_4_eta", "jet_4_phi", "jet_4_b-tag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
]
HIGGS_COLUMNS = ["label", *HIGGS_FEATURES]
ZIP_MAX_BYTES = 4 << 30   # uncompressed bytes read from one zip member


class ReadError(ValueError):
    """A raw file cannot be read as declared; the message names the file, row and column."""


def _open_text(path: Path):
    """Binary handle, gunzipped when the name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _check_text_encoding(path: Path) -> None:
    """Refuse, with a clear message, a file that is UTF-16/32 text (only UTF-8 is read)."""
    try:
        with _open_text(path) as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise ReadError(f"{path}: cannot read: {e}") from None
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        raise ReadError(f"{path}: the file is UTF-32 text; only UTF-8 (with or without BOM) is read")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 2 and (head[0] == 0) != (head[1] == 0)):
        raise ReadError(f"{path}: the file looks like UTF-16 text; only UTF-8 (with or without BOM) is read")


def _decode_error(path: Path, e: UnicodeDecodeError) -> ReadError:
    return ReadError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} cannot be decoded; "
                     f"latin-1 or another 8-bit encoding?); convert the file to UTF-8")


def _check_field_counts(path: Path, sep: str, expected: int, header: bool, what: str) -> None:
    """Every non-blank record has ``expected`` fields, or :class:`ReadError` naming the data row.

    pandas silently pads a short record with empty cells and, with ``usecols``, drops or shifts
    the extra fields of a long one; a truncated or misaligned record must not become data.
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with _open_text(path) as fb, io.TextIOWrapper(fb, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=sep)
            if header:
                next(reader, None)
            for row, rec in enumerate(reader):
                if rec and len(rec) != expected:
                    raise ReadError(f"{path}: row {row} (line {reader.line_num}): {len(rec)} field(s), "
                                    f"expected {expected} ({what}); a truncated or misaligned record")
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    except (csv.Error, OSError, EOFError) as e:
        raise ReadError(f"{path}: cannot parse as CSV: {e}") from None


def csv_header(path: str | Path, sep: str = ",") -> list[str]:
    path = Path(path)
    _check_text_encoding(path)
    try:
        head = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig", compression="infer")
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, ValueError) as e:
        raise ReadError(f"{path}: cannot read the CSV header: {e}") from None
    return [str(c) for c in head.columns]


def read_csv(path: str | Path, columns: Sequence[str], sep: str = ",") -> pd.DataFrame:
    """The named columns of a CSV file, as strings (empty cells are ``""``), plus ``source_row``.

    Line endings (LF / CRLF), a UTF-8 BOM, quoting and gzip compression are handled; a missing
    column raises :class:`ReadError` naming the file, the column and the columns present.
    """
    path = Path(path)
    header = csv_header(path, sep)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ReadError(f"{path}: missing column(s) {missing}; the file has columns {header[:20]}"
                        + (" ..." if len(header) > 20 else ""))
    try:
        df = pd.read_csv(path, sep=sep, usecols=list(dict.fromkeys(columns)), dtype=str,
                         keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                         compression="infer", skip_blank_lines=False)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    except (pd.errors.ParserError, OSError, EOFError, ValueError) as e:
        raise ReadError(f"{path}: cannot parse as CSV: {e}") from None
    _check_field_counts(path, sep, len(header), True, "one per header column")
    df = df[list(dict.fromkeys(columns))]
    # A trailing blank line (present in some files) is not a record.
    if len(df) and all(df[c].iat[-1] == "" for c in df.columns):
        df = df.iloc[:-1]
    df = df.reset_index(drop=True)
    df.insert(0, "source_row", np.arange(len(df), dtype=np.int64))
    return df


def numeric_column(values: pd.Series, source_rows: np.ndarray, path: str | Path, column: str,
                   integer: bool = False) -> np.ndarray:
    """Parse a string column to float64 (``NaN`` for empty cells).

    A cell that is not a number raises :class:`ReadError` naming file, row and column; with
    ``integer`` a non-integral value does too.
    """
    s = pd.Series(values, copy=False).astype(str).str.strip()
    out = pd.to_numeric(s.where(s != "", None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(out) & (s != "").to_numpy()
    bad |= np.isinf(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ReadError(f"{path}: row {int(source_rows[i])}, column {column!r}: "
                        f"not a number: {s.iat[i]!r} ({int(bad.sum())} such cell(s))")
    if integer:
        ok = ~np.isnan(out)
        frac = ok & (out != np.round(out))
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ReadError(f"{path}: row {int(source_rows[i])}, column {column!r}: "
                            f"not an integer class label: {s.iat[i]!r}")
    return out


def read_lines_zip(path: str | Path, max_bytes: int = ZIP_MAX_BYTES) -> pd.DataFrame:
    """``source_row``, ``text``: the lines of the single member of a zip file (no header).

    At most ``max_bytes`` are inflated (an archive bomb is refused, not read into memory).
    """
    from .archives import ArchiveError, read_zip_member

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise ReadError(f"{path}: expected exactly one member in the zip, found "
                                f"{[m.filename for m in members][:20]}")
            data = read_zip_member(path, members[0], zf, max_bytes=max_bytes)
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except ArchiveError as e:
        raise ReadError(str(e)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
            ValueError) as e:
        if isinstance(e, ReadError):
            raise
        raise ReadError(f"{path}: not a readable zip file: {type(e).__name__}: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReadError(f"{path}: member {members[0].filename} is not UTF-8: {e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return pd.DataFrame({"source_row": np.arange(len(lines), dtype=np.int64),
                         "text": pd.array(lines, dtype="str")})


_UNIPROT = re.compile(r"^(?:sp|tr)\|([^|\s]+)\|(\S*)")


def parse_fasta_header(header: str) -> tuple[str, str]:
    """(accession, entry name) from ``sp|ACC|NAME ...`` / ``tr|ACC|NAME ...``; otherwise the first
    word of the header and ``""``."""
    m = _UNIPROT.match(header)
    if m:
        return m.group(1), m.group(2)
    word = header.split(maxsplit=1)
    return (word[0] if word else ""), ""


def read_fasta(handle: io.BufferedIOBase, path: str | Path) -> pd.DataFrame:
    accs: list[str] = []
    names: list[str] = []
    headers: list[str] = []
    seqs: list[str] = []
    parts: list[str] = []
    for lineno, raw in enumerate(handle, start=1):
        line = raw.decode("utf-8", errors="strict").strip()
        if line.startswith(">"):
            if headers:
                seqs.append("".join(parts))
            parts = []
            h = line[1:].strip()
            acc, name = parse_fasta_header(h)
            accs.append(acc)
            names.append(name)
            headers.append(h)
        elif line:
            if not headers:
                raise ReadError(f"{path}: line {lineno}: sequence data before the first '>' header")
            parts.append(line)
    if headers:
        seqs.append("".join(parts))
    return pd.DataFrame({
        "source_row": np.arange(len(headers), dtype=np.int64),
        "accession": pd.array(accs, dtype="str"),
        "name": pd.array(names, dtype="str"),
        "header": pd.array(headers, dtype="str"),
        "seq": pd.array(seqs, dtype="str"),
    })


def read_fasta_gz(path: str | Path) -> pd.DataFrame:
    """``source_row`` (record index), ``accession``, ``name``, ``header``, ``seq`` (as given)."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            return read_fasta(f, path)
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ReadError(f"{path}: cannot read as gzip FASTA: {e}") from None


@dataclass(frozen=True)
class Rounding:
    """How coarsely a file prints its values: a value ``x`` is within ``rel * |x| + abs`` of the
    exact one (half a unit in the last printed digit)."""
    rel: float
    abs: float

    def error_at_one(self) -> float:  # a single number to rank files by precision
        return self.rel + self.abs


_NUM = re.compile(r"^[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$")


def infer_rounding(cells: Sequence[str]) -> Rounding:
    """The rounding of printed numbers (half a unit in the last printed digit).

    * scientific notation with ``k`` mantissa decimals: relative ``0.5e-k``;
    * fixed notation with the same number ``k`` of decimals in (nearly) every cell: absolute
      ``0.5e-k``;
    * fixed notation with a varying number of decimals (a fixed number of significant digits,
      trailing zeros dropped): relative ``0.5e-(s-1)`` for the median significant digits ``s``,
      plus the absolute half-unit of the median decimals.
    """
    sci_dec: list[int] = []
    fix_dec: list[int] = []
    sig: list[int] = []
    for c in cells:
        m = _NUM.match(c.strip())
        if not m:
            continue
        ipart, fpart, exp = m.group(1) or "", m.group(2) or "", m.group(3)
        if exp is not None:
            sci_dec.append(len(fpart))
            continue
        fix_dec.append(len(fpart))
        digits = (ipart + fpart).lstrip("0")
        if digits and fpart:
            sig.append(len(digits))
    rel = 0.0
    ab = 0.0
    if sci_dec:
        rel = 0.5 * 10.0 ** (-int(np.median(sci_dec)))
    if fix_dec:
        values, counts = np.unique(fix_dec, return_counts=True)
        mode = int(values[np.argmax(counts)])
        if counts.max() >= 0.9 * len(fix_dec):
            ab = 0.5 * 10.0 ** (-mode)
        else:
            ab = 0.5 * 10.0 ** (-int(np.median(fix_dec)))
            if sig:
                rel = max(rel, 0.5 * 10.0 ** (-(int(np.median(sig)) - 1)))
    if not sci_dec and not fix_dec:
        ab = 0.5
    return Rounding(rel=rel, abs=ab)


def _norm_name(c: str) -> str:
    return re.sub(r"[^a-z0-9]", "", c.lower())


def read_higgs(path: str | Path, label: str = "first", header: bool = True,
               sep: str = ",") -> tuple[pd.DataFrame, Rounding]:
    """A HIGGS file as ``source_row, label, lepton_pT, ..., m_wwbb`` (label int64, features
    float64) and the rounding of its features.

    ``label`` is ``"first"`` or ``"last"``: the position of the label column; features are in
    the UCI order in every known copy. A header with UCI-like names is checked against the UCI
    order; generic headers (``response, x1, ...``) are accepted as they are.
    """
    path = Path(path)
    if label not in ("first", "last"):
        raise ReadError(f"{path}: label position must be 'first' or 'last', got {label!r}")
    _check_text_encoding(path)
    try:
        df = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str,
                         keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                         compression="infer")
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, ValueError) as e:
        raise ReadError(f"{path}: cannot parse as HIGGS ({'tab' if sep == chr(9) else repr(sep)}-separated"
                        f", header={header}): {str(e).strip()}") from None
    if df.shape[1] != len(HIGGS_COLUMNS):
        raise ReadError(f"{path}: expected {len(HIGGS_COLUMNS)} columns (label + 28 features) with "
                        f"sep={sep!r}, found {df.shape[1]}")
    _check_field_counts(path, sep, len(HIGGS_COLUMNS), header, "label + 28 features")
    raw_names = [str(c) for c in df.columns]
    positions = list(range(29)) if label == "first" else [28, *range(28)]
    order = [raw_names[p] for p in positions]
    df = df.iloc[:, positions]
    if header:
        known = {_norm_name(c) for c in HIGGS_COLUMNS}
        if any(_norm_name(c) in known for c in order):
            for got, want in zip(order, HIGGS_COLUMNS):
                if _norm_name(got) != _norm_name(want):
                    raise ReadError(f"{path}: column {got!r} where {want!r} was expected "
                                    f"(label {label}); the header does not follow the UCI order")
        names = order
    else:
        names = [f"field {p + 1}" for p in positions]
    df.columns = HIGGS_COLUMNS
    rows = np.arange(len(df), dtype=np.int64)
    out = {"source_row": rows}
    lab_name = "label" if names[0] == "label" else f"label ({names[0]})"
    lab = numeric_column(df["label"], rows, path, lab_name, integer=True)
    if np.isnan(lab).any():
        i = int(np.flatnonzero(np.isnan(lab))[0])
        raise ReadError(f"{path}: row {i}, column {lab_name!r}: empty label")
    if not np.isin(lab, (0.0, 1.0)).all():
        i = int(np.flatnonzero(~np.isin(lab, (0.0, 1.0)))[0])
        raise ReadError(f"{path}: row {i}, column {lab_name!r}: label must be 0 or 1, "
                        f"got {df['label'].iat[i]!r}")
    out["label"] = lab.astype(np.int64)
    sample: list[str] = []
    for j, c in enumerate(HIGGS_FEATURES):
        colname = f"{c} ({names[j + 1]})" if names[j + 1] != c else c
        vals = numeric_column(df[c], rows, path, colname)
        if np.isnan(vals).any():
            i = int(np.flatnonzero(np.isnan(vals))[0])
            raise ReadError(f"{path}: row {i}, column {colname!r}: empty value")
        out[c] = vals
        sample.extend(df[c].iloc[:2000].tolist())
    return pd.DataFrame(out), infer_rounding(sample)


def read_parquet(path: str | Path, columns: Sequence[str] | None = None):
    """A Parquet file as a :class:`pyarrow.Table` (only ``columns`` when given).

    A missing, truncated or foreign file, or a missing column, raises :class:`ReadError` naming
    the file (and the column) instead of pyarrow's own exception.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise ReadError(f"{path}: file not found") from None
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ReadError(f"{path}: not a readable Parquet file: {e}") from None
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ReadError(f"{path}: missing column(s) {missing}; the file has columns {schema.names[:20]}")
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ReadError(f"{path}: cannot read the Parquet data: {e}") from None


# --------------------------------------------------------------------------------------------
# Task sources in any layout (registry formats csv / tsv / parquet / sdf / fasta). These readers
# take the bytes of one source (a plain file, a gunzipped file or an archive member, see
# :mod:`pipeline_src.data.sources`) and ``where``, the name used in messages. They return every
# cell as a string (``""`` = empty / missing) plus ``source_row``: the 0-based data record.

WHITESPACE = "whitespace"   # ``sep`` value: fields separated by runs of spaces / tabs, no quoting


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM is dropped); UTF-16/32 and 8-bit encodings are refused by name."""
    head = data[:4]
    if head in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        raise ReadError(f"{where}: the file is UTF-32 text; only UTF-8 (with or without BOM) is read")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 2 and (head[0] == 0) != (head[1] == 0)):
        raise ReadError(f"{where}: the file looks like UTF-16 text; only UTF-8 (with or without BOM) is read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ReadError(f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start} cannot be "
                        f"decoded; latin-1 or another 8-bit encoding?); convert the file to UTF-8") from None


def _records(text: str, sep: str, where: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, fields) of every record; blank lines give ``[]``."""
    if sep == WHITESPACE:
        for lineno, line in enumerate(text.splitlines(), start=1):
            yield lineno, line.split()
        return
    if len(sep) != 1:
        raise ReadError(f"{where}: separator must be one character or {WHITESPACE!r}, got {sep!r}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        for rec in reader:
            yield reader.line_num, rec
    except csv.Error as e:
        raise ReadError(f"{where}: line {reader.line_num}: cannot parse as {sep!r}-separated text: {e}") from None


def read_delimited(data: bytes, where: str, sep: str = ",", header: bool = True,
                   names: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A delimited text table: ``source_row`` plus the ``columns`` (all when ``None``) as strings.

    ``header``: the first record names the columns; otherwise ``names`` does, or ``col1, col2, ...``.
    Every non-blank record must have as many fields as there are columns (a truncated or
    misaligned record is refused naming its row and line); blank records are skipped but counted
    in ``source_row``.
    """
    text = decode_text(data, where)
    recs = _records(text, sep, where)
    head: list[str] | None = None
    if header:
        for _, rec in recs:
            if rec:
                head = [c.strip() for c in rec]
                break
        if head is None:
            raise ReadError(f"{where}: empty file (no header line)")
        if names:
            raise ReadError(f"{where}: 'column_names' is for files without a header (header: false)")
    rows: list[list[str]] = []
    srows: list[int] = []
    for row, (lineno, rec) in enumerate(recs):
        if not rec:
            continue
        if head is None:
            head = list(names) if names else [f"col{i + 1}" for i in range(len(rec))]
        if len(rec) != len(head):
            raise ReadError(f"{where}: row {row} (line {lineno}): {len(rec)} field(s), expected {len(head)} "
                            f"(one per column {head[:8]}{' ...' if len(head) > 8 else ''}); a truncated or misaligned record")
        rows.append(rec)
        srows.append(row)
    if head is None:
        head = list(names) if names else []
    dups = sorted({c for c in head if head.count(c) > 1})
    if dups:
        raise ReadError(f"{where}: column name(s) {dups} appear more than once in the header")
    want = list(head) if columns is None else list(dict.fromkeys(columns))
    missing = [c for c in want if c not in head]
    if missing:
        raise ReadError(f"{where}: missing column(s) {missing}; the file has columns {head[:20]}"
                        + (" ..." if len(head) > 20 else ""))
    pos = [head.index(c) for c in want]
    out = {"source_row": np.asarray(srows, dtype=np.int64)}
    for c, j in zip(want, pos):
        out[c] = pd.array([r[j] for r in rows], dtype="str")
    return pd.DataFrame(out)


def read_parquet_frame(data: bytes, where: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A Parquet table as ``source_row`` plus string columns: numbers as their shortest exact
    decimal form, booleans as ``true`` / ``false``, nulls and NaN as ``""``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ReadError(f"{where}: not a readable Parquet file: {e}") from None
    names = table.schema.names
    want = list(names) if columns is None else list(dict.fromkeys(columns))
    missing = [c for c in want if c not in names]
    if missing:
        raise ReadError(f"{where}: missing column(s) {missing}; the file has columns {names[:20]}"
                        + (" ..." if len(names) > 20 else ""))
    out = {"source_row": np.arange(table.num_rows, dtype=np.int64)}
    for c in want:
        col = table.column(c)
        t = col.type
        if pa.types.is_floating(t):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, t), col)
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = t.value_type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
                or pa.types.is_decimal(t)):
            raise ReadError(f"{where}: column {c!r} has type {t}; only text, number and boolean columns are read")
        s = pc.fill_null(col.cast(pa.string()), "")
        out[c] = pd.array(s.to_pylist(), dtype="str")
    return pd.DataFrame(out)


MOL_BLOCK = "mol block"   # the SDF reader's column holding each record's molecule as SMILES


def _mol_block_smiles(block: str) -> str | None:
    """SMILES of a mol block (stereo from the block kept). A block RDKit reads but cannot
    sanitize (e.g. a valence problem) gives its unsanitized SMILES, which prepare then drops with
    RDKit's reason, as it does an invalid SMILES; ``None`` when RDKit cannot read the block at all."""
    from rdkit import Chem, rdBase

    _block = rdBase.BlockLogs()  # noqa: F841 - RDKit logging off while this lives
    mol = Chem.MolFromMolBlock(block)
    if mol is not None:
        return Chem.MolToSmiles(mol)
    mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
    if mol is None:
        return None
    try:
        mol.UpdatePropertyCache(strict=False)
        return Chem.MolToSmiles(mol)
    except Exception:  # noqa: BLE001 - any RDKit failure means: not usable
        return None


_SDF_FIELD = re.compile(r"^>.*?<([^>]*)>")


def read_sdf(data: bytes, where: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """An SD file: ``source_row`` (record index), ``mol block`` (the molecule as SMILES), the
    title line as ``_Name``, and the data items (properties) as string columns (``""`` where a
    record lacks one).

    A record without an ``M  END`` line (truncated) or whose molecule block RDKit cannot read
    raises :class:`ReadError` naming the file, the record and its line.
    """
    text = decode_text(data, where)
    lines = text.splitlines()
    records: list[tuple[int, list[str]]] = []
    start = 0
    for i, line in enumerate(lines):
        if line.strip() == "$$$$":
            records.append((start + 1, lines[start:i]))
            start = i + 1
    if any(ln.strip() for ln in lines[start:]):
        records.append((start + 1, lines[start:]))
    props: list[dict[str, str]] = []
    smiles: list[str] = []
    names: list[str] = []
    keys: dict[str, None] = {}
    for row, (first, rec) in enumerate(records):
        end = next((k for k, ln in enumerate(rec) if ln.startswith("M  END")), None)
        if end is None:
            raise ReadError(f"{where}: row {row} (record {row + 1}, line {first}), column {MOL_BLOCK!r}: "
                            f"no 'M  END' line: a truncated or malformed record")
        block = "\n".join(rec[:end + 1]) + "\n"
        smi = _mol_block_smiles(block)
        if smi is None:
            raise ReadError(f"{where}: row {row} (record {row + 1}, line {first}), column {MOL_BLOCK!r}: "
                            f"RDKit cannot read the molecule block (bad counts line, atom or bond line?)")
        d: dict[str, str] = {}
        k = end + 1
        while k < len(rec):
            m = _SDF_FIELD.match(rec[k])
            k += 1
            if not m:
                continue
            vals = []
            while k < len(rec) and rec[k].strip() != "":
                vals.append(rec[k])
                k += 1
            key = m.group(1)
            if key in d:
                raise ReadError(f"{where}: row {row} (record {row + 1}, line {first + k - 1}): "
                                f"data item {key!r} appears twice in the record")
            d[key] = "\n".join(vals)
            keys.setdefault(key, None)
        props.append(d)
        smiles.append(smi)
        names.append(rec[0].strip() if rec else "")
    all_cols = [MOL_BLOCK, "_Name", *[k for k in keys if k not in (MOL_BLOCK, "_Name")]]
    want = all_cols if columns is None else list(dict.fromkeys(columns))
    missing = [c for c in want if c not in all_cols]
    if missing:
        raise ReadError(f"{where}: missing column(s) {missing}: no record has such a data item; the file has "
                        f"{all_cols[:20]}" + (" ..." if len(all_cols) > 20 else ""))
    out: dict[str, Any] = {"source_row": np.arange(len(records), dtype=np.int64)}
    for c in want:
        if c == MOL_BLOCK:
            out[c] = pd.array(smiles, dtype="str")
        elif c == "_Name":
            out[c] = pd.array(names, dtype="str")
        else:
            out[c] = pd.array([p.get(c, "") for p in props], dtype="str")
    return pd.DataFrame(out)


def read_fasta_frame(data: bytes, where: str, id_pattern: str | None = None,
                     label_pattern: str | None = None) -> pd.DataFrame:
    """A FASTA file: ``source_row`` (record index), ``id``, ``header``, ``seq``, and one column per
    named group of ``label_pattern`` (a regular expression searched in each header; a header it
    does not match raises :class:`ReadError` naming the record).

    ``id``: the first group of ``id_pattern`` (searched in the header) when given, else the
    UniProt accession of ``sp|ACC|NAME`` / ``tr|ACC|NAME`` headers, else the header's first word.
    """
    try:
        df = read_fasta(io.BytesIO(data), where)
    except UnicodeDecodeError as e:
        raise ReadError(f"{where}: not UTF-8 text: {e}") from None
    headers = df["header"].tolist()
    ids = df["accession"].tolist()
    out: dict[str, Any] = {"source_row": df["source_row"].to_numpy(), "id": None, "header": df["header"],
                           "seq": df["seq"]}
    if id_pattern:
        rx = _compile(id_pattern, where, "id_pattern")
        if rx.groups < 1:
            raise ReadError(f"{where}: id_pattern {id_pattern!r} needs a group: the id is its first group")
        ids = []
        for row, h in enumerate(headers):
            m = rx.search(h)
            if not m or m.group(1) is None:
                raise ReadError(f"{where}: row {row} (record {row + 1}), column 'header': "
                                f"id_pattern {id_pattern!r} does not match {h[:120]!r}")
            ids.append(m.group(1))
    out["id"] = pd.array(ids, dtype="str")
    if label_pattern:
        rx = _compile(label_pattern, where, "label_pattern")
        groups = list(rx.groupindex)
        if not groups:
            raise ReadError(f"{where}: label_pattern {label_pattern!r} has no named group "
                            f"(write (?P<name>...) for each label or fold column)")
        clash = [g for g in groups if g in out]
        if clash:
            raise ReadError(f"{where}: label_pattern group name(s) {clash} clash with the columns id, header, seq")
        vals: dict[str, list[str]] = {g: [] for g in groups}
        for row, h in enumerate(headers):
            m = rx.search(h)
            if not m:
                raise ReadError(f"{where}: row {row} (record {row + 1}), column 'header': "
                                f"label_pattern {label_pattern!r} does not match {h[:120]!r}")
            for g in groups:
                vals[g].append(m.group(g) or "")
        for g in groups:
            out[g] = pd.array(vals[g], dtype="str")
    return pd.DataFrame(out)


def _compile(pattern: str, where: str, key: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ReadError(f"{where}: {key} {pattern!r} is not a valid regular expression: {e}") from None


_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", ""}


def bool_column(values: pd.Series, source_rows: np.ndarray, where: str, column: str) -> np.ndarray:
    """A true/false flag column (``true/false``, ``yes/no``, ``1/0``; empty = false) -> bool array;
    another value raises :class:`ReadError` naming the file, row and column."""
    s = pd.Series(values, copy=False).astype(str).str.strip().str.lower()
    t = s.isin(_TRUE).to_numpy()
    f = s.isin(_FALSE).to_numpy()
    bad = ~(t | f)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ReadError(f"{where}: row {int(source_rows[i])}, column {column!r}: not a true/false flag: "
                        f"{values.iat[i]!r} ({int(bad.sum())} such cell(s))")
    return t
