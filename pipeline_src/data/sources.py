"""One raw source of a task: a plain file, a gzip file, or a named member of a zip / tar archive,
read as a table of string cells (registry formats ``csv``, ``tsv``, ``parquet``, ``sdf``, ``fasta``).

The compression is taken from the names: ``.gz`` is gunzipped; ``.zip``, ``.tar``, ``.tar.gz`` and
``.tgz`` are archives whose member is named by the file entry's ``member`` (it may be omitted when
the archive holds exactly one file); a member whose own name ends in ``.gz`` is gunzipped too.
Archive members are read through :mod:`pipeline_src.data.archives` (safe paths, no links, size
caps); every byte count is capped. Messages name the file and the member.
"""
from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import readers
from .archives import ArchiveError, list_members, read_tar_member, read_zip_member
from .readers import ReadError

MAX_BYTES = 4 << 30      # uncompressed bytes of one source
TABLE_FORMATS = ("csv", "tsv", "parquet", "sdf", "fasta")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".smi": "csv",
                  ".parquet": "parquet", ".pq": "parquet", ".sdf": "sdf", ".sd": "sdf",
                  ".fasta": "fasta", ".fa": "fasta", ".faa": "fasta", ".fas": "fasta"}


def archive_kind(name: str) -> str | None:
    """``zip``, ``tar`` or ``None`` from a file name."""
    n = name.lower()
    if n.endswith(".zip"):
        return "zip"
    if n.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def describe(path: str | Path, member: str | None = None) -> str:
    """How messages name a source: ``path`` or ``path [member m]``."""
    return f"{path}" if member is None else f"{path} [member {member}]"


def inner_name(path: str | Path, member: str | None = None) -> str:
    """The name that tells the format: the member's name, else the file's; ``.gz`` removed."""
    name = Path(member).name if member else Path(path).name
    return name[:-3] if name.lower().endswith(".gz") else name


def format_of(path: str | Path, member: str | None = None) -> str | None:
    """The registry format a file or member name suggests (``None`` if unknown)."""
    return _SUFFIX_FORMAT.get(Path(inner_name(path, member)).suffix.lower())


def _gunzip(data_or_path: bytes | Path, where: str, max_bytes: int) -> bytes:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else open(data_or_path, "rb")
    parts, n = [], 0
    try:
        with src, gzip.GzipFile(fileobj=src) as g:
            while chunk := g.read(1 << 20):
                n += len(chunk)
                if n > max_bytes:
                    raise ReadError(f"{where}: inflates past the cap of {max_bytes} bytes")
                parts.append(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ReadError(f"{where}: not a readable gzip file: {e}") from None
    return b"".join(parts)


def read_bytes(path: str | Path, member: str | None = None, max_bytes: int = MAX_BYTES) -> bytes:
    """The uncompressed bytes of a source (see the module docstring)."""
    path = Path(path)
    where = describe(path, member)
    if not path.exists():
        raise ReadError(f"{path}: file not found")
    kind = archive_kind(path.name)
    if kind is None:
        if member is not None:
            raise ReadError(f"{path}: 'member' {member!r} is given but the file is not a .zip, .tar, .tar.gz or .tgz archive")
        if path.name.lower().endswith(".gz"):
            return _gunzip(path, where, max_bytes)
        if path.stat().st_size > max_bytes:
            raise ReadError(f"{path}: {path.stat().st_size} bytes, more than the cap of {max_bytes}")
        return path.read_bytes()
    try:
        if member is None:
            files = list_members(path)
            if len(files) != 1:
                raise ReadError(f"{path}: the archive holds {len(files)} files {files[:20]}; name the one to read "
                                f"with 'member' (--member)")
            member = files[0]
            where = describe(path, member)
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    names = [i.filename for i in zf.infolist() if not i.is_dir()]
                    raise ReadError(f"{path}: no member {member!r}; the archive holds {names[:20]}"
                                    + (" ..." if len(names) > 20 else "")) from None
                if info.is_dir():
                    raise ReadError(f"{where}: a folder, not a file")
                list_members(path)  # the whole archive passes the safety checks
                data = read_zip_member(path, info, zf, max_bytes=max_bytes)
        else:
            data = read_tar_member(path, member, max_bytes=max_bytes)
    except ArchiveError as e:
        raise ReadError(str(e)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise ReadError(f"{where}: cannot read the archive: {type(e).__name__}: {e}") from None
    if member.lower().endswith(".gz"):
        data = _gunzip(data, where, max_bytes)
    return data


def read_frame(path: str | Path, fmt: str, file_entry: dict[str, Any], columns: Sequence[str] | None = None,
               fasta: dict[str, Any] | None = None) -> pd.DataFrame:
    """``source_row`` plus string columns of one source, in format ``fmt``; ``file_entry`` gives
    ``member``, and for text tables ``sep`` (default ``,`` for csv, a tab for tsv), ``header``
    (default true) and ``column_names``; ``fasta`` gives ``id_pattern`` and ``label_pattern``."""
    member = file_entry.get("member")
    where = describe(path, member)
    data = read_bytes(path, member)
    if fmt in ("csv", "tsv"):
        sep = file_entry.get("sep", "\t" if fmt == "tsv" else ",")
        return readers.read_delimited(data, where, sep=sep, header=bool(file_entry.get("header", True)),
                                      names=file_entry.get("column_names"), columns=columns)
    if fmt == "parquet":
        return readers.read_parquet_frame(data, where, columns)
    if fmt == "sdf":
        return readers.read_sdf(data, where, columns)
    if fmt == "fasta":
        fasta = fasta or {}
        df = readers.read_fasta_frame(data, where, fasta.get("id_pattern"), fasta.get("label_pattern"))
        if columns is not None:
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise ReadError(f"{where}: missing column(s) {missing}; a FASTA record has {list(df.columns)[1:]} "
                                f"(named groups of fasta.label_pattern, or columns of fasta.labels_file)")
        return df
    raise ReadError(f"{where}: format {fmt!r} is not a table format (known: {', '.join(TABLE_FORMATS)})")
