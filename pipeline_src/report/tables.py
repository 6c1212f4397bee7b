"""Report tables: our aggregated cells beside the papers' reported numbers.

A table has one column per dataset and two kinds of rows: ours (one per (method, protocol), with
``mean ± std (n)`` cells, the significantly best per column in bold — by the design-aware test,
the pretraining seed as the unit (:mod:`.stats`) — gaps explained) and "reported" (copied
from ``config/reference_results.yaml``, never mixed into our statistics).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..atomic import write_bytes_atomic
from ..paths import HIGHER_IS_BETTER
from .aggregate import CELL_KEY, ResultKey

METRIC_LABEL = {"rmse": "RMSE", "roc_auc": "ROC-AUC", "spearman": "Spearman", "accuracy": "accuracy"}
PROTOCOL_ORDER = ("finetune", "linear", "classical")
NOT_RUN, NOT_APPLICABLE, NOT_REPORTED = "not run", "n/a", "not reported"


@dataclass
class Cell:
    text: str
    status: str                      # ok | partial | not run | failed | n/a | reported | not reported
    mean: float | None = None
    std: float | None = None
    n: int | None = None
    bold: bool = False


@dataclass
class Row:
    label: str
    source: str                      # "ours" or "reported"
    method: str | None
    protocol: str
    note: str = ""                   # "not domain-agnostic", "domain-specific baseline", ...
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Table:
    key: str                         # file stem of the CSV copy
    title: str
    datasets: list[str]
    metrics: dict[str, str]          # dataset -> metric name
    split_kind: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def fmt_value(x: float) -> str:
    return f"{x:.3f}"


def fmt_cell(mean: float, std: float | None, n: int) -> str:
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{fmt_value(mean)} (n={n})"
    return f"{fmt_value(mean)} ± {fmt_value(std)} (n={n})"


def column_header(dataset: str, metric: str) -> str:
    if metric not in HIGHER_IS_BETTER:
        return dataset
    arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
    return f"{dataset} ({METRIC_LABEL.get(metric, metric)} {arrow})"


@dataclass
class CellSource:
    """Everything needed to fill one of our cells: aggregates, the planned runs and their logs."""

    agg: pd.DataFrame                               # aggregate() output
    present: set[ResultKey]                         # result files found (and used)
    expected: list[ResultKey] | None                # planned runs; None = unknown
    logs_root: str = "data/logs"
    config_datasets: set[str] = field(default_factory=set)
    applicable: Callable[[str, str, str], bool] = lambda ds, m, p: True
    _index: dict[tuple, dict[str, Any]] = field(default_factory=dict, init=False)
    _planned: dict[tuple, list[ResultKey]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._index = {tuple(r[k] for k in CELL_KEY): r for r in self.agg.to_dict("records")}
        for k in self.expected or []:
            self._planned.setdefault(k.cell, []).append(k)

    def planned_rows(self, datasets: list[str], split_kind: str | None) -> list[tuple[str, str]]:
        """(method, protocol) pairs planned or present for any of ``datasets`` (at ``split_kind``)."""
        keys = list(self._planned) + list(self._index)
        out = [(m, p) for ds, m, p, sk in keys if ds in datasets and (split_kind is None or sk == split_kind)]
        return list(dict.fromkeys(out))

    def split_kinds(self, datasets: list[str]) -> list[str]:
        keys = list(self._planned) + list(self._index)
        return list(dict.fromkeys(sk for ds, _, _, sk in keys if ds in datasets))

    def _failed_logs(self, cell: tuple[str, str, str, str], missing: list[ResultKey]) -> list[str]:
        if self.expected is not None:  # one log per job; a linear or classical job has several runs
            return list(dict.fromkeys(k.log_path(self.logs_root) for k in missing
                                      if Path(k.log_path(self.logs_root)).exists()))
        ds, m, p, sk = cell
        base = Path(self.logs_root) / "evaluate" / ds / m / p
        job_log = base.with_name(f"{p}.log")  # linear / classical: one job for every split and seed
        if job_log.exists() and not any(k.cell == cell for k in self.present):
            return [job_log.as_posix()]
        if not base.is_dir():
            return []
        logs = [q for q in sorted(base.glob("*/seed*.log"))
                if q.parent.name == sk or q.parent.name.rsplit("_seed", 1)[0] == sk]
        done = {(k.split, k.seed) for k in self.present if k.cell == cell}
        return [q.as_posix() for q in logs if (q.parent.name, int(q.stem[4:])) not in done]

    def cell(self, dataset: str, method: str, protocol: str, split_kind: str) -> Cell:
        key = (dataset, method, protocol, split_kind)
        planned = self._planned.get(key, [])
        missing = [k for k in planned if k not in self.present]
        failed = self._failed_logs(key, missing)
        rec = self._index.get(key)
        if rec is not None:
            std = None if pd.isna(rec["std"]) else float(rec["std"])
            text = fmt_cell(float(rec["mean"]), std, int(rec["n"]))
            status = "ok"
            if missing:
                status = "partial"
                text += f" [{int(rec['n'])} of {int(rec['n']) + len(missing)}"
                text += f"; failed (log: {failed[0]}{f' and {len(failed) - 1} more' if len(failed) > 1 else ''})]" \
                    if failed else "; rest not run]"
            return Cell(text, status, float(rec["mean"]), std, int(rec["n"]))
        if failed:
            more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
            return Cell(f"failed (log: {failed[0]}{more})", "failed")
        if dataset in self.config_datasets and not planned and not self.applicable(dataset, method, protocol):
            return Cell(NOT_APPLICABLE, NOT_APPLICABLE)
        return Cell(NOT_RUN, NOT_RUN)


def _row_order(pairs: list[tuple[str, str]], method_order: list[str]) -> list[tuple[str, str]]:
    def key(mp: tuple[str, str]) -> tuple[int, int, str]:
        m, p = mp
        pi = PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
        mi = method_order.index(m) if m in method_order else len(method_order)
        return (pi, mi, m)
    return sorted(dict.fromkeys(pairs), key=key)


def mark_best(table: Table, best: dict[tuple[str, str], set[str]] | None = None) -> None:
    """Bold what is significantly best. With ``best`` ((dataset, protocol) -> methods, from
    :func:`.stats.significantly_best` on this table's split kind, Tukey HSD on the seed means):
    those methods' cells, per protocol.
    Without it (no statistics available) nothing is bolded."""
    if best is None:
        return
    for r in table.rows:
        if r.source != "ours" or r.method is None:
            continue
        for ds in table.datasets:
            c = r.cells[ds]
            if c.mean is not None and r.method in best.get((ds, r.protocol), set()):
                c.bold = True


def our_rows(src: CellSource, datasets: list[str], split_kind: str, pairs: list[tuple[str, str]],
             notes: dict[str, str], names: dict[str, str] | None = None) -> list[Row]:
    """One row per (method, protocol); labels from ``names`` (method -> display name, from meta.json)."""
    from .stats import display_name  # stats imports this module's labels

    rows = []
    for method, protocol in pairs:
        note = "domain-specific baseline" if protocol == "classical" else notes.get(method, "")
        cells = {ds: src.cell(ds, method, protocol, split_kind) for ds in datasets}
        rows.append(Row(display_name(method, names), "ours", method, protocol, note, cells))
    return rows


def reported_rows(ref: dict[str, Any], datasets: list[str]) -> list[Row]:
    rows = []
    for r in ref.get("rows", []):
        vals = r.get("values", {}) or {}
        cells = {ds: (Cell(fmt_value(float(vals[ds])), "reported", float(vals[ds])) if vals.get(ds) is not None
                      else Cell(NOT_REPORTED, NOT_REPORTED)) for ds in datasets}
        note = "not domain-agnostic" if r.get("domain_agnostic") is False else ""
        rows.append(Row(str(r["label"]), "reported", r.get("method"), str(ref.get("protocol", "")), note, cells))
    return rows


def build_table(key: str, title: str, datasets: list[str], metrics: dict[str, str], split_kind: str,
                src: CellSource, method_order: list[str], notes: dict[str, str], ref: dict[str, Any] | None,
                protocols: tuple[str, ...] | None = None, default_pairs: list[tuple[str, str]] = (),
                best: dict[tuple[str, str], set[str]] | None = None, names: dict[str, str] | None = None) -> Table:
    """One table: our rows (``default_pairs`` and any pair planned or present for these datasets,
    restricted to ``protocols``), then the reported rows of ``ref``. ``best``: what to bold, from
    :func:`.stats.significantly_best` (the design-aware Tukey HSD); ``names``: display names."""
    pairs = [*default_pairs, *src.planned_rows(datasets, split_kind)]
    if protocols is not None:
        pairs = [mp for mp in pairs if mp[1] in protocols]
    rows = our_rows(src, datasets, split_kind, _row_order(pairs, method_order), notes, names)
    table = Table(key, title, datasets, metrics, split_kind, rows)
    mark_best(table, best)
    if ref is not None:
        table.rows += reported_rows(ref, datasets)
        table.notes.append(f"Reported rows: {ref.get('source', 'unknown source')}"
                           + (f", {ref['split']} split" if ref.get("split") else "") + ".")
        if ref.get("notes"):
            table.notes.append(str(ref["notes"]))
    return table


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    head = ["method", "protocol", "source", *[column_header(d, table.metrics.get(d, "")) for d in table.datasets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + [":---:"] * len(table.datasets)) + "|"]
    for r in table.rows:
        label = r.label + (f" ({r.note})" if r.note and r.note not in r.label else "")
        cells = []
        for d in table.datasets:
            c = r.cells[d]
            cells.append(f"**{c.text}**" if c.bold else c.text)
        lines.append("| " + " | ".join(_md_escape(x) for x in [label, r.protocol, r.source, *cells]) + " |")
    out = "\n".join(lines)
    if table.notes:
        out += "\n\n" + "\n".join(f"*{_md_escape(n)}*" for n in table.notes)
    return out


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["label", "source", "method", "protocol", "note", "split"]
    for d in table.datasets:
        head += [d, f"{d}_std", f"{d}_n", f"{d}_status"]
    w.writerow(head)
    for r in table.rows:
        line: list[Any] = [r.label, r.source, r.method or "", r.protocol, r.note, table.split_kind]
        for d in table.datasets:
            c = r.cells[d]
            line += ["" if c.mean is None else repr(c.mean), "" if c.std is None else repr(c.std),
                     "" if c.n is None else c.n, c.status if c.status not in ("failed", "partial") else c.text]
        w.writerow(line)
    return buf.getvalue()


def write_csv(table: Table, tables_dir: str | Path) -> Path:
    return write_bytes_atomic(Path(tables_dir) / f"{table.key}.csv", to_csv(table).encode("utf-8"))
