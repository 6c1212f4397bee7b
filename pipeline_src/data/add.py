"""``python -m pipeline_src dataset add``: write the registry entry of a user's dataset.

The command reads the file as prepare will (through the same readers), infers what it can
(format from the name, separator and header of a text table, the single member of an archive),
prepares it into a temporary folder (so every reader and fold check runs, with messages naming
the file, row and column), shows a preview and the checksum, and appends the entry to the
registry, validated against ``workflow/schemas/datasets.schema.yaml`` (``--dry-run`` prints it).
The registry is rewritten atomically; on any error it is left as it was.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from . import readers, sources
from ..atomic import write_bytes_atomic
from .readers import ReadError

SEPARATORS = (",", "\t", ";", "|")
DEFAULT_METRIC = {"regression": "rmse", "binary": "roc_auc", "multiclass": "accuracy"}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PREVIEW_ROWS = 5


class AddError(ValueError):
    """The dataset cannot be added as asked; the message names the file, row and column."""


@dataclass
class AddRequest:
    name: str
    files: list[str]
    mirror: str
    domain: str
    kind: str
    labels: list[str]
    task: str
    split: str
    input_columns: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    file_folds: list[str] = field(default_factory=list)
    metric: str | None = None
    fold_column: str | None = None
    fold_values: str | None = None
    valid_column: str | None = None
    valid_fraction: float | None = None
    seed: int | None = None
    drop_unknown_folds: bool = False
    format: str | None = None
    sep: str | None = None
    header: bool | None = None
    column_names: list[str] = field(default_factory=list)
    label_pattern: str | None = None
    id_pattern: str | None = None
    labels_file: str | None = None
    labels_member: str | None = None
    labels_id_column: str | None = None
    title: str | None = None
    urls: list[str] = field(default_factory=list)
    registry: str = "config/datasets.yaml"
    dry_run: bool = False


def sha256_of(path: Path) -> tuple[str, str | None]:
    """sha256 of the bytes, and of the text with CRLF turned into LF when a plain text file has CRLF."""
    data = path.read_bytes()
    full = hashlib.sha256(data).hexdigest()
    plain = sources.archive_kind(path.name) is None and not path.name.lower().endswith(".gz")
    if plain and b"\r\n" in data and b"\x00" not in data[:4096]:
        return full, hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()
    return full, None


def parse_fold_values(text: str | None) -> dict[str, Any] | None:
    """``train=a,valid=v|w,test=t`` -> ``{"train": "a", "valid": ["v", "w"], "test": "t"}``."""
    if not text:
        return None
    out: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("train", "valid", "test") or not value.strip():
            raise AddError(f"--fold-values: {part!r} is not train=VALUE, valid=VALUE or test=VALUE "
                           f"(several values joined by '|')")
        if key in out:
            raise AddError(f"--fold-values: {key} is given twice")
        vals = [v.strip() for v in value.split("|") if v.strip()]
        out[key] = vals[0] if len(vals) == 1 else vals
    return out


def _first_records(text: str, sep: str, n: int = 50) -> list[list[str]]:
    """The first ``n`` non-blank records of ``text`` (whole lines of its head) split by ``sep``."""
    out: list[list[str]] = []
    if sep == readers.WHITESPACE:
        lines = (ln.split() for ln in text.splitlines())
    else:
        lines = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        for rec in lines:
            if rec:
                out.append(rec)
            if len(out) >= n:
                break
    except csv.Error:
        return []
    return out


def _head_text(path: Path, member: str | None, where: str, limit: int = 1 << 20) -> str:
    """The first whole lines (up to ``limit`` bytes) of a text source, decoded."""
    data = sources.read_bytes(path, member)
    if len(data) > limit:
        data = data[:limit]
        data = data[: data.rfind(b"\n") + 1] or data
    return readers.decode_text(data, where)


def infer_separator(text: str, where: str) -> str:
    """The separator giving the same number (> 1) of fields on each of the first lines; the most
    fields wins, then the order , tab ; | whitespace."""
    best: tuple[int, str] | None = None
    for sep in (*SEPARATORS, readers.WHITESPACE):
        recs = _first_records(text, sep)
        counts = {len(r) for r in recs}
        if len(recs) and len(counts) == 1 and (n := counts.pop()) > 1 and (best is None or n > best[0]):
            best = (n, sep)
    if best is None:
        raise AddError(f"{where}: cannot tell the separator (no candidate among , tab ; | whitespace gives the same "
                       f"number of fields on the first lines); give --sep")
    return best[1]


def infer_header(first: list[str], wanted: Sequence[str], where: str) -> bool:
    """A header when the first record holds any of the named columns (prepare then names the
    missing ones); none when they are all ``colN``."""
    cells = [c.strip() for c in first]
    if any(w in cells for w in wanted):
        return True
    generic = [re.fullmatch(r"col(\d+)", w) for w in wanted]
    if wanted and all(g and 1 <= int(g.group(1)) <= len(cells) for g in generic):
        return False
    missing = [w for w in wanted if w not in cells]
    raise AddError(f"{where}: row 0 (the header), column(s) {missing}: not in the header {cells[:20]}; "
                   f"for a file without a header name its columns col1, col2, ... (or give --column-names)")


def _fmt_of(path: Path, member: str | None, given: str | None) -> str:
    fmt = given or sources.format_of(path, member)
    if fmt is None:
        raise AddError(f"{sources.describe(path, member)}: cannot tell the format from the name; give --format "
                       f"({', '.join(sources.TABLE_FORMATS)})")
    if fmt not in sources.TABLE_FORMATS:
        raise AddError(f"--format {fmt!r}: not one of {', '.join(sources.TABLE_FORMATS)}")
    return fmt


def _file_entry(path: Path, mirror: Path, member: str | None) -> dict[str, Any]:
    try:
        rel = path.resolve().relative_to(mirror.resolve())
    except ValueError:
        raise AddError(f"{path}: not inside the mirror directory {mirror} (--mirror); the registry records the "
                       f"path relative to it") from None
    if sources.archive_kind(path.name) and member is None:
        try:
            from .archives import ArchiveError, list_members

            files = list_members(path)
        except ArchiveError as e:
            raise AddError(str(e)) from None
        if len(files) != 1:
            raise AddError(f"{path}: the archive holds {len(files)} files {files[:20]}; name one with --member")
        member = files[0]
    digest, digest_lf = sha256_of(path)
    f: dict[str, Any] = {"name": path.name, "mirror_path": rel.as_posix(), "sha256": digest}
    if digest_lf:
        f["sha256_lf"] = digest_lf
    if member is not None:
        f["member"] = member
    return f


def _text_layout(req: AddRequest, path: Path, f: dict, fmt: str, wanted: list[str]) -> None:
    """Fill ``sep`` / ``header`` / ``column_names`` of a csv / tsv file entry (given or inferred)."""
    where = sources.describe(path, f.get("member"))
    text = _head_text(path, f.get("member"), where) if req.sep is None or req.header is None else ""
    sep = req.sep if req.sep is not None else infer_separator(text, where)
    sep = "\t" if sep in ("tab", "\\t") else sep
    if req.column_names:
        header = False if req.header is None else req.header
    elif req.header is not None:
        header = req.header
    else:
        recs = _first_records(text, sep, 1)
        if not recs:
            raise AddError(f"{where}: empty file")
        header = infer_header(recs[0], wanted, where)
    if sep != ("\t" if fmt == "tsv" else ","):
        f["sep"] = sep
    if not header:
        f["header"] = False
    if req.column_names:
        f["column_names"] = list(req.column_names)


def build_entry(req: AddRequest) -> dict[str, Any]:
    """The registry entry the request describes (files read for inference and checksums)."""
    if not NAME_RE.match(req.name):
        raise AddError(f"dataset name {req.name!r}: lowercase letters, digits and '_', starting with a letter")
    if req.task not in DEFAULT_METRIC:
        raise AddError(f"--task {req.task!r}: one of {', '.join(DEFAULT_METRIC)}")
    if not req.files:
        raise AddError("--file is required")
    mirror = Path(req.mirror)
    if not mirror.is_dir():
        raise AddError(f"--mirror {mirror}: not a directory")
    paths = [Path(p) for p in req.files]
    for p in paths:
        if not p.is_file():
            raise AddError(f"{p}: file not found")
    if req.members and len(req.members) != len(paths):
        raise AddError(f"--member given {len(req.members)} time(s) for {len(paths)} --file(s); give one per file")
    if len(paths) > 1 and req.split != "fixed":
        raise AddError(f"several --file are for --split fixed (one fold per file); --split {req.split} reads one file")
    members = list(req.members) or [None] * len(paths)
    fmt = _fmt_of(paths[0], members[0], req.format)
    for p, m in zip(paths[1:], members[1:]):
        if _fmt_of(p, m, req.format) != fmt:
            raise AddError(f"{sources.describe(p, m)}: not the format {fmt!r} of the first file")
    # input
    inputs = list(req.input_columns)
    if req.kind == "numeric":
        if not inputs:
            raise AddError("--kind numeric needs --input-column with the feature columns")
        if fmt not in ("csv", "tsv", "parquet"):
            raise AddError(f"--kind numeric reads a csv, tsv or parquet table, not {fmt!r}")
        inp: dict[str, Any] = {"columns": inputs, "kind": "numeric"}
    else:
        if len(inputs) > 1:
            raise AddError(f"--kind {req.kind} takes one --input-column, got {inputs}")
        if not inputs and fmt not in ("sdf", "fasta"):
            raise AddError(f"--input-column is required for format {fmt!r} (sdf defaults to the molecule block, "
                           f"fasta to the sequence)")
        inp = {**({"column": inputs[0]} if inputs else {}), "kind": req.kind}
    # split
    if req.split == "scaffold" and req.kind != "smiles":
        raise AddError(f"--split scaffold groups molecules by scaffold: it needs --kind smiles, not {req.kind}")
    if req.kind == "numeric" and req.split not in ("column", "fixed"):
        raise AddError("--kind numeric needs --split column or fixed (features are standardized with the train fold)")
    split: dict[str, Any] = {"kind": req.split}
    if req.split in ("scaffold", "random"):
        split["fractions"] = [0.8, 0.1, 0.1]
    if req.split != "column" and (req.fold_column or req.fold_values):
        raise AddError("--fold-column / --fold-values are for --split column")
    if req.split == "column":
        if not req.fold_column:
            raise AddError("--split column needs --fold-column (the column holding each row's fold)")
        split["column"] = req.fold_column
        values = parse_fold_values(req.fold_values)
        if values:
            split["values"] = values
    if req.valid_column and req.valid_fraction is not None:
        raise AddError("give --valid-column or --valid-fraction, not both")
    if req.valid_column:
        split["valid_column"] = req.valid_column
    if req.valid_fraction is not None:
        if not 0 < req.valid_fraction < 1:
            raise AddError(f"--valid-fraction {req.valid_fraction}: between 0 and 1")
        split["valid_fraction"] = float(req.valid_fraction)
        if req.seed is not None:
            split["seed"] = int(req.seed)
    if (req.valid_column or req.valid_fraction is not None) and req.split not in ("column", "fixed"):
        raise AddError(f"--valid-column / --valid-fraction are for --split column or fixed, not {req.split}")
    if req.split == "fixed" and len(req.file_folds) != len(paths):
        raise AddError(f"--split fixed needs one --file-fold (train, valid or test) per --file: "
                       f"got {len(req.file_folds)} for {len(paths)} file(s)")
    # files
    files = []
    for i, (p, m) in enumerate(zip(paths, members)):
        f = _file_entry(p, mirror, m)
        if fmt in ("csv", "tsv"):
            wanted = [*inputs, *req.labels, *[c for c in (req.fold_column, req.valid_column) if c]]
            _text_layout(req, p, f, fmt, wanted)
        if req.split == "fixed":
            f["fold"] = req.file_folds[i]
        f["urls"] = list(req.urls)
        files.append(f)
    entry: dict[str, Any] = {"title": req.title or req.name, "domain": req.domain, "role": "task", "format": fmt,
                             "input": inp, "labels": list(req.labels), "task": req.task,
                             "metric": req.metric or DEFAULT_METRIC[req.task], "split": split}
    if fmt == "fasta":
        fa: dict[str, Any] = {}
        if req.id_pattern:
            fa["id_pattern"] = req.id_pattern
        if req.label_pattern:
            fa["label_pattern"] = req.label_pattern
        if req.labels_file:
            lp = Path(req.labels_file)
            if not lp.is_file():
                raise AddError(f"{lp}: file not found (--labels-file)")
            lf = _file_entry(lp, mirror, req.labels_member)
            lfmt = sources.format_of(lp, lf.get("member")) or "csv"
            if lfmt in ("csv", "tsv"):
                idc = req.labels_id_column or "id"
                wanted = [idc, *req.labels, *[c for c in (req.fold_column, req.valid_column) if c]]
                sub = AddRequest(**{**req.__dict__, "sep": None, "header": None, "column_names": []})
                _text_layout(sub, lp, lf, lfmt, [w for w in wanted if w])
            lf["urls"] = []
            fa["labels_file"] = lf["name"]
            if req.labels_id_column:
                fa["labels_id_column"] = req.labels_id_column
            files.append(lf)
        if fa:
            entry["fasta"] = fa
    elif req.label_pattern or req.labels_file or req.id_pattern:
        raise AddError("--label-pattern / --id-pattern / --labels-file are for FASTA files")
    names = [f["name"] for f in files]
    if len(set(names)) != len(names):
        raise AddError(f"file names {names} must differ (they all land in data/raw/{req.name}/)")
    entry["files"] = files
    return entry


def _raw_dir(entry: dict, paths: dict[str, Path], tmp: Path) -> Path:
    """A folder holding every file of the entry under its name: the files' own folder when they
    share one (messages then name the user's file), else links in ``tmp``."""
    parents = {p.resolve().parent for p in paths.values()}
    if len(parents) == 1:
        return parents.pop()
    raw = tmp / "raw"
    raw.mkdir()
    for f in entry["files"]:
        (raw / f["name"]).symlink_to(paths[f["name"]].resolve())
    return raw


def _preview(entry: dict, raw: Path, log: Callable[[str], None]) -> None:
    from .prepare import _input_column

    f = entry["files"][0]
    fmt = entry["format"]
    cols = (entry["input"].get("columns") or [_input_column("preview", entry)]) + list(entry["labels"])
    split = entry["split"]
    cols += [c for c in (split.get("column"), split.get("valid_column")) if c]
    fa = entry.get("fasta") or {}
    try:
        df = sources.read_frame(raw / f["name"], fmt, f, None if fa.get("labels_file") else cols, fa)
    except ReadError:
        return  # prepare reports it
    show = [c for c in dict.fromkeys(cols) if c in df.columns]
    log(f"preview ({min(PREVIEW_ROWS, len(df))} of {len(df)} rows):")
    head = df[["source_row", *show]].head(PREVIEW_ROWS)
    for line in head.to_string(index=False, max_colwidth=40).splitlines():
        log("  " + line)


def add_dataset(req: AddRequest, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, check and (unless ``dry_run``) append the entry; returns it."""
    from ..config import ConfigError, load_registry, validate
    from .prepare import PrepareError, prepare_dataset

    registry = Path(req.registry)
    try:
        known = load_registry(registry)
    except ConfigError as e:
        raise AddError(str(e)) from None
    if req.name in known:
        raise AddError(f"{registry}: a dataset named {req.name!r} is already there")
    try:
        entry = build_entry(req)
    except ReadError as e:
        raise AddError(str(e)) from None
    try:
        validate({"datasets": {req.name: yaml.safe_load(yaml.safe_dump(entry))}}, "datasets.schema.yaml", "the new entry")
    except ConfigError as e:
        raise AddError(str(e)) from None
    paths = {Path(p).name: Path(p) for p in req.files}
    if req.labels_file:
        paths[Path(req.labels_file).name] = Path(req.labels_file)
    f0 = entry["files"][0]
    log(f"{req.name}: {f0['name']}" + (f" [member {f0['member']}]" if "member" in f0 else "")
        + f", format {entry['format']}" + (f", separator {f0.get('sep', 'default')!r}, header {f0.get('header', True)}"
                                          if entry["format"] in ("csv", "tsv") else "")
        + f", sha256 {f0['sha256']}")
    with tempfile.TemporaryDirectory(prefix="maskbench-add-") as tmp:
        raw = _raw_dir(entry, paths, Path(tmp))
        _preview(entry, raw, log)
        try:
            if not req.drop_unknown_folds:
                _check_fold_values(req.name, entry, raw)
            qc = prepare_dataset(req.name, entry, raw, Path(tmp) / "processed")
        except AddError:
            raise
        except (PrepareError, ReadError) as e:
            raise AddError(str(e)) from None
        except ValueError as e:
            raise AddError(f"{req.name}: {e}") from None
    log(f"prepare check: {qc['rows_in']} rows read, {qc['rows_out']} kept, {qc['rows_dropped']} dropped "
        f"{qc['drop_reasons'] or ''}".rstrip())
    if "folds" in qc:
        log(f"folds: {qc['folds']}")
    for lab, st in (qc.get("labels") or {}).items():
        log(f"label {lab}: {st}")
    text = yaml.safe_dump({req.name: entry}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    block = "".join(f"  {line}\n" for line in text.splitlines())
    if req.dry_run:
        log("entry (not written, --dry-run):")
        log(block.rstrip("\n"))
        return entry
    old = registry.read_text(encoding="utf-8")
    new = old + ("" if old.endswith("\n") else "\n") + block
    parsed = yaml.safe_load(new)
    if not isinstance(parsed, dict) or parsed.get("datasets", {}).get(req.name) != yaml.safe_load(text)[req.name]:
        raise AddError(f"{registry}: cannot append the entry under 'datasets:' (is 'datasets' the last top-level key?); "
                       f"add it by hand (--dry-run prints it)")
    try:
        validate(parsed, "datasets.schema.yaml", str(registry))
    except ConfigError as e:
        raise AddError(str(e)) from None
    write_bytes_atomic(registry, new.encode("utf-8"))
    dom = req.domain
    log(f"added {req.name!r} to {registry}. To run it: name it in domains.{dom}.tasks of your run config"
        + (f" (with 'column' in domains.{dom}.splits)" if req.split == "column" else "")
        + f", and list {req.mirror} in data.mirrors (or $MASKBENCH_DATA_MIRRORS).")
    return entry


def _check_fold_values(name: str, entry: dict, raw: Path) -> None:
    """Every value of the fold column is mapped by ``split.values`` (prepare would drop the other
    rows; here that is an error unless --drop-unknown-folds)."""
    from collections import Counter

    from .prepare import QC, _data_files, _fold_key, _read_source, fold_map

    split = entry["split"]
    if split.get("kind") != "column":
        return
    col = split["column"]
    fmap = fold_map(name, split)
    for f in _data_files(name, entry):
        df, where, _ = _read_source(name, entry, raw, f, [col], QC(name, entry))
        raw_vals = df[col].astype(str).str.strip()
        bad = ~raw_vals.map(lambda v: _fold_key(v) in fmap).to_numpy(dtype=bool)
        if bad.any():
            i = int(bad.argmax())
            values = Counter(raw_vals[bad].tolist())
            raise AddError(f"{where}: row {int(df['source_row'].iat[i])}, column {col!r}: fold value {raw_vals.iat[i]!r} "
                           f"is not one of {sorted(fmap)} ({int(bad.sum())} row(s); values {dict(values.most_common(10))}); "
                           f"map them with --fold-values, or pass --drop-unknown-folds to drop these rows "
                           f"(listed in qc.json)")


def add_arguments(p) -> None:
    import argparse

    p.add_argument("name", help="registry name (lowercase, digits, _)")
    p.add_argument("--file", action="append", required=True, dest="files",
                   help="the data file (inside --mirror); several with --split fixed, each with --file-fold")
    p.add_argument("--member", action="append", default=[], dest="members",
                   help="the file to read inside a zip / tar.gz (one per --file)")
    p.add_argument("--mirror", required=True, help="the mirror directory the file lies in (the entry records the path relative to it)")
    p.add_argument("--domain", required=True)
    p.add_argument("--input-column", nargs="+", default=[], dest="input_columns",
                   help="input column (numeric: the feature columns); sdf: default the molecule block, fasta: the sequence")
    p.add_argument("--kind", required=True, choices=["smiles", "protein", "numeric"])
    p.add_argument("--labels", nargs="+", required=True, help="label column(s); several = a multi-task set")
    p.add_argument("--task", required=True, choices=list(DEFAULT_METRIC))
    p.add_argument("--metric", choices=["rmse", "roc_auc", "spearman", "accuracy"],
                   help="default: rmse (regression), roc_auc (binary), accuracy (multiclass)")
    p.add_argument("--split", required=True, choices=["scaffold", "random", "fixed", "column"])
    p.add_argument("--fold-column", help="--split column: the column holding each row's fold")
    p.add_argument("--fold-values", help="train=VALUE,valid=VALUE,test=VALUE (several values joined by |); default the fold names")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--valid-column", help="a true/false column: flagged train rows become valid")
    g.add_argument("--valid-fraction", type=float, help="carve this fraction of train rows into valid (seeded)")
    p.add_argument("--seed", type=int, help="seed of the --valid-fraction draw (default 0)")
    p.add_argument("--file-fold", action="append", default=[], dest="file_folds", choices=["train", "valid", "test"],
                   help="--split fixed: the fold of each --file")
    p.add_argument("--drop-unknown-folds", action="store_true",
                   help="accept fold values outside --fold-values: those rows are dropped (listed in qc.json)")
    p.add_argument("--format", choices=list(sources.TABLE_FORMATS), help="default: from the file (or member) name")
    p.add_argument("--sep", help="separator of a text table: one character, 'tab' or 'whitespace' (default: inferred)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the first line names the columns (default: inferred)")
    p.add_argument("--column-names", nargs="+", default=[], help="column names of a file without a header")
    p.add_argument("--label-pattern", help="FASTA: regex searched in each header; a named group per label / fold column")
    p.add_argument("--id-pattern", help="FASTA: regex searched in each header; its first group is the record id")
    p.add_argument("--labels-file", help="FASTA: a csv / tsv / parquet table (inside --mirror) joined to the records by id")
    p.add_argument("--labels-member", help="the member of --labels-file to read when it is an archive")
    p.add_argument("--labels-id-column", help="FASTA: the id column of --labels-file (default id)")
    p.add_argument("--title")
    p.add_argument("--url", action="append", default=[], dest="urls", help="upstream URL(s) of the file")
    p.add_argument("--registry", default="config/datasets.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the entry instead of appending it")


def main_from_args(a) -> None:
    req = AddRequest(**{k: v for k, v in vars(a).items() if k in AddRequest.__dataclass_fields__})
    add_dataset(req)

