"""Report figures (PNG, matplotlib Agg): loss curves, finetune valid curves, per-task comparison
bars, SMA masks."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..paths import HIGHER_IS_BETTER  # noqa: E402
from .masks import MaskDraws, mask_rate_by_label  # noqa: E402
from .tables import METRIC_LABEL  # noqa: E402


def save_png(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.png")
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def loss_curves(corpus: str, logs: dict[str, pd.DataFrame], path: str | Path, smooth: int = 10,
                baseline: float | None = None) -> Path | None:
    """One line per method (raw loss faint, a moving average solid); None when no method has a log.
    With ``baseline`` (the corpus's frequency baseline) the curves are loss / baseline, with the
    level 1 (a model that knows only the token frequencies) drawn dashed."""
    logs = {m: df for m, df in logs.items() if not df.empty}
    if not logs:
        return None
    scale = float(baseline) if baseline else 1.0
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (method, df) in enumerate(sorted(logs.items())):
        color = f"C{i % 10}"
        df = df.sort_values("step")
        y = df["loss"] / scale
        ax.plot(df["step"], y, color=color, alpha=0.25, linewidth=0.8)
        window = max(1, min(smooth, len(df) // 10))
        ax.plot(df["step"], y.rolling(window, min_periods=1, center=True).mean(), color=color, label=method)
    ax.set_xlabel("step")
    if baseline:
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8, label="frequency baseline")
        ax.set_ylabel("training loss / frequency baseline")
    else:
        ax.set_ylabel("pretraining loss (masked tokens)")
    ax.set_title(f"Pretraining loss on {corpus}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def finetune_curve_means(task: str, results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Per (method, epoch): the mean, min and max of the valid metric over the finetune runs of
    ``task`` (result dicts with a ``curve``), and ``n``, the runs that reached that epoch (early
    stopping ends runs at different epochs). Columns: method, epoch, mean, min, max, n."""
    rows = [(r["method"], int(c["epoch"]), float(c["valid"]))
            for r in results
            if r.get("dataset") == task and r.get("protocol") == "finetune"
            for c in r.get("curve") or [] if c.get("valid") is not None]
    df = pd.DataFrame(rows, columns=["method", "epoch", "valid"])
    return (df.groupby(["method", "epoch"], sort=True)["valid"].agg(["mean", "min", "max", "size"])
            .rename(columns={"size": "n"}).reset_index())


def finetune_curves(task: str, results: Iterable[dict[str, Any]], path: str | Path) -> Path | None:
    """The valid metric per finetune epoch of ``task``, one line per method: the mean over its runs
    (splits x seeds) that reached the epoch, the band from their min to max. ``results``: result
    JSON dicts (other tasks and protocols are skipped). None when no run of ``task`` has a curve."""
    results = list(results)
    means = finetune_curve_means(task, results)
    if means.empty:
        return None
    metric = next(r.get("metric", "") for r in results if r.get("dataset") == task and r.get("protocol") == "finetune")
    arrow = "" if metric not in HIGHER_IS_BETTER else (" ↑" if HIGHER_IS_BETTER[metric] else " ↓")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (method, df) in enumerate(means.groupby("method", sort=True)):
        color = f"C{i % 10}"
        runs = int(df["n"].max())
        ax.fill_between(df["epoch"], df["min"], df["max"], color=color, alpha=0.15, linewidth=0)
        ax.plot(df["epoch"], df["mean"], color=color, marker="o", markersize=3, label=f"{method} ({runs} runs)")
    ax.set_xlabel("finetune epoch")
    ax.set_ylabel(f"valid {METRIC_LABEL.get(metric, metric)}{arrow}")
    ax.set_title(f"Finetuning on {task}: valid metric per epoch (mean over runs; band = min to max)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def task_bars(agg: pd.DataFrame, metrics: dict[str, str], path: str | Path, title: str) -> Path | None:
    """One panel per (dataset, split kind), one bar per (method, protocol) with ± std error bars."""
    if agg.empty:
        return None
    panels = list(agg[["dataset", "split_kind"]].drop_duplicates().itertuples(index=False, name=None))
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (ds, sk) in zip(axes.flat, panels):
        sub = agg[(agg["dataset"] == ds) & (agg["split_kind"] == sk)].reset_index(drop=True)
        labels = [f"{m}\n({p})" for m, p in zip(sub["method"], sub["protocol"])]
        err = sub["std"].fillna(0.0).to_numpy(float)
        colors = ["0.6" if p == "classical" else f"C{['finetune', 'linear'].index(p) if p in ('finetune', 'linear') else 2}"
                  for p in sub["protocol"]]
        ax.bar(np.arange(len(sub)), sub["mean"].to_numpy(float), yerr=err, color=colors, capsize=3)
        ax.set_xticks(np.arange(len(sub)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.6, max(len(sub), 4) - 0.4)
        metric = metrics.get(ds, "")
        arrow = "" if metric not in HIGHER_IS_BETTER else (" ↑" if HIGHER_IS_BETTER[metric] else " ↓")
        ax.set_title(f"{ds} ({sk})", fontsize=9)
        ax.set_ylabel(METRIC_LABEL.get(metric, metric) + arrow, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def mask_figure(d: MaskDraws, path: str | Path, n_show: int = 6, max_positions: int = 80) -> Path:
    """Top: the masks of ``n_show`` samples, two draws each (dark = masked), labelled with the
    tokens; bottom: how often each token (character, feature) is masked over all samples and draws."""
    draws, b, n = d.masks.shape
    n_show = min(n_show, b)
    width = min(n, max_positions)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(max(8, 0.16 * width + 2), 3 + 0.45 * n_show * draws + 3),
                                   gridspec_kw={"height_ratios": [max(1, n_show * draws) * 0.5, 3]})
    img = np.full((n_show * draws, width), np.nan)
    ylabels = []
    for s in range(n_show):
        L = min(int(d.lengths[s]), width)
        for k in range(draws):
            img[s * draws + k, :L] = d.masks[k, s, :L]
            ylabels.append(f"sample {s} draw {k + 1}")
    ax0.imshow(np.ma.masked_invalid(img), cmap="Greys", vmin=-0.3, vmax=1.0, aspect="auto", interpolation="nearest")
    for s in range(n_show):
        for i, lab in enumerate(d.labels[s][:width]):
            if d.kind == "discrete":
                for k in range(draws):
                    masked = d.masks[k, s, i]
                    ax0.text(i, s * draws + k, lab, ha="center", va="center", fontsize=6,
                             color="white" if masked else "black", family="monospace")
    ax0.set_yticks(np.arange(n_show * draws), ylabels, fontsize=7)
    if d.kind == "continuous" and d.feature_names:
        ax0.set_xticks(np.arange(width), d.feature_names[:width], rotation=75, fontsize=6)
    else:
        ax0.set_xlabel("position" + (f" (first {width} of {n} shown)" if n > width else ""))
    ax0.set_title(f"SMA masks on {d.corpus} (ratio {d.ratio:.2f}); dark = masked; two draws from the same weights",
                  fontsize=9)
    rates = mask_rate_by_label(d, min_count=1 if d.kind == "continuous" else 5)
    if d.kind == "continuous" and d.feature_names:
        order = {f: i for i, f in enumerate(d.feature_names)}
        rates = sorted(rates, key=lambda r: order.get(r[0], 0))
    else:
        rates = rates[:40]
    ax1.bar(np.arange(len(rates)), [r[1] for r in rates], color="C3")
    ax1.axhline(d.ratio, color="0.3", linestyle="--", linewidth=1, label="mask ratio")
    ax1.set_xticks(np.arange(len(rates)), [r[0] for r in rates], rotation=75 if d.kind == "continuous" else 0,
                   fontsize=7, family="monospace")
    ax1.set_ylabel("fraction masked")
    ax1.set_title(f"Masking rate per {'feature' if d.kind == 'continuous' else 'character'} "
                  f"({b} samples × {draws} draws)", fontsize=9)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
