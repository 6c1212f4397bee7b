"""``python -m pipeline_src report``: results, checkpoints and benchmarks -> ``reports/all.md``.

Writes the CSV copies of every table under ``tables_dir`` and the figures under ``figures_dir``
first, then ``out_md`` atomically (its presence marks a complete report). Partial results are
fine: a missing cell says "not run" or "failed (log: ...)", a figure that cannot be drawn says why.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import ConfigError, config_hash, load_config, load_registry
from ..paths import log_path, masks_path, meta_path
from ..plan import METHOD_NOTES, baselines_for, eval_settings_hash, planned_results
from ..atomic import write_bytes_atomic
from ..plan import pretrain_seeds
from ..spec import TrainSpec, resolve_pretrain
from .aggregate import ResultKey, aggregate, fold_sizes, load_results, parse_result_path, restrict_to
from .tables import CellSource, Table, build_table, to_markdown, write_csv

REFERENCE_PATH = "config/reference_results.yaml"
PAPER_TABLES = ("tape", "moleculenet", "higgs", "linear")
SUBSTITUTES = {
    "moses": "MOSES SMILES (ZINC Clean Leads) stand in for the GuacaMol corpus SMA pretrains on.",
    "uniprot": "UniProt proteomes stand in for Pfam (SMA, MetaMAE pretrain on Pfam).",
    "higgs": "HIGGS: about 26k real rows of UCI HIGGS instead of HIGGS-small's 98k (SMA Table 3b).",
    "remote_homology": "TAPE remote homology: only the fold-holdout test set (TAPE also has family "
                       "and superfamily holdouts).",
}
HOW_TO_READ = """\
- **Cells** are `mean ± std (n=units)` of the test metric over the evaluation units of one split kind:
  a unit is (pretraining seed, split) — e.g. the 3 pretraining seeds x the 10 `scaffold_cv` folds give
  n = 30; on a deterministic split (`scaffold`, `fixed`) n is the number of pretraining seeds. std is
  the sample std (ddof = 1), left out when n = 1. `[k of N; ...]` means only k of the N planned runs
  produced a result. Every method of a task is scored on the same units (paired).
- **Direction**: ↑ higher is better (ROC-AUC, accuracy, Spearman), ↓ lower is better (RMSE: ESOL in
  log mol/L, FreeSolv in kcal/mol, Lipophilicity in log D).
- **Bold** marks what is *significantly* best within a protocol and split kind: the best mean, and every
  method whose Tukey HSD interval against it contains 0 — the design-aware test, on the pretraining
  seeds' means (a seed's folds averaged first) — bolded only when the best is significantly better
  than at least one other method (Findings names the tests). No bold = no significant winner.
  Reported rows are never bolded.
- **Protocols**: `finetune` = encoder + head trained end to end, model selected on the validation
  split (SMA protocol); `linear` = frozen encoder, pooled features, a linear model chosen on the
  validation split (MetaMAE/DABS protocol); `classical` = a non-learned, domain-specific baseline
  (random forest on Morgan fingerprints, gradient boosting on the HIGGS features, a linear model on
  amino-acid composition) on the same splits and seeds.
- **reported** rows are the numbers printed in the papers (source and settings under each table, from
  `config/reference_results.yaml`); they come from other data sizes, models, splits and compute and are
  never averaged into ours.
- **Gaps**: `not run` = not part of this run (or not planned by the config); `failed (log: ...)` =
  planned, no result file, its log exists; `n/a` = a baseline that does not apply to this input kind.
- Methods marked *not domain-agnostic* use a prior on token order (span masking); classical rows are
  *domain-specific baselines*.
"""


def _display_path(p: str | Path) -> str:
    """A path as written in the report: relative to the working directory, never absolute."""
    p = Path(p)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def _link(target: Path, out_md: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out_md.resolve().parent)).as_posix()


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fmt_s(s: float | None) -> str:
    if s is None or pd.isna(s):
        return "n/a"
    s = float(s)
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{s:,.0f} s ({h}:{m:02d}:{sec:02d})"


def _missing(x: Any) -> bool:
    return x is None or (not isinstance(x, str) and bool(pd.isna(x)))


def _fmt_num(x: Any, digits: int = 1) -> str:
    if _missing(x):
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _samples(n: int | None) -> str:
    return "all samples" if n is None else f"{int(n):,} samples"


def read_expected(path: str | Path) -> list[str]:
    """A text file of planned result paths, one per line (blank lines and # comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


# units of the RMSE tasks' labels, written after each difference in the findings
METRIC_UNITS = {"esol": "log mol/L", "freesolv": "kcal/mol", "lipo": "log D"}


def _primary_kinds(results: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(dataset, protocol) -> the split kind with the most evaluation units (the one its findings use)."""
    if results.empty:
        return {}
    n = results.groupby(["dataset", "protocol", "split_kind"])["unit"].nunique().reset_index()
    n = n.sort_values(["dataset", "protocol", "unit", "split_kind"], ascending=[True, True, False, True], kind="stable")
    first = n.drop_duplicates(["dataset", "protocol"])
    return {(ds, p): k for ds, p, k in first[["dataset", "protocol", "split_kind"]].itertuples(index=False, name=None)}


def _statistics(results: pd.DataFrame) -> tuple[dict[str, dict], dict[tuple[str, str], str]]:
    """Per split kind, the per-task tests of :mod:`.stats` (their families: (dataset, protocol); the
    design-aware tests on the pretraining seeds' means); and each (dataset, protocol)'s primary split kind."""
    from .stats import all_task_tests

    out: dict[str, dict] = {}
    if results.empty:
        return out, {}
    for kind, g in results.groupby("split_kind", sort=True):
        out[str(kind)] = all_task_tests(g[["dataset", "method", "protocol", "unit", "test", "metric"]])
    return out, _primary_kinds(results)


def unconverged_probes(results: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(task, method, protocol) -> (probes that did not converge, probes with a solver record), for
    every pair with at least one: a verdict on such a pair rests on a probe that did not converge
    (the result JSON's ``probe.converged``: every fit of the regularization grid stopped below
    ``max_iter`` without a ConvergenceWarning)."""
    if results.empty or "probe_converged" not in results:
        return {}
    rec = results[results["probe_converged"].notna()]
    out = {}
    for key, g in rec.groupby(["dataset", "method", "protocol"], sort=True):
        bad = int((~g["probe_converged"].astype(bool)).sum())
        if bad:
            out[key] = (bad, len(g))
    return out


def probe_notes(results: pd.DataFrame, datasets: list[str], split_kind: str | None = None) -> list[str]:
    """A table's note on the linear probes of its tasks (and split kind): how many converged, and
    every (task, method) whose probes did not all converge, marked as such."""
    if results.empty or "probe_converged" not in results:
        return []
    sub = results[results["dataset"].isin(datasets) & results["protocol"].isin(["linear", "classical"])]
    if split_kind is not None:
        sub = sub[sub["split_kind"] == split_kind]
    rec = sub[sub["probe_converged"].notna()]
    if sub[sub["protocol"] == "linear"].empty:
        return []
    if rec.empty:
        return ["Linear probes: the solver's convergence is not recorded in these results (written before it was)."]
    bad = unconverged_probes(rec)
    iters = pd.to_numeric(rec["probe_n_iter"], errors="coerce").dropna()
    most = f", at most {int(iters.max())} iterations of max_iter {int(rec['probe_max_iter'].dropna().max())}" \
        if not iters.empty and rec["probe_max_iter"].notna().any() else ""
    if not bad:
        return [f"Linear probes: all {len(rec)} converged (every fit of the regularization grid{most})."]
    pairs = "; ".join(f"{ds} / {m} ({p}): {b} of {n}" for (ds, m, p), (b, n) in bad.items())
    return [f"Linear probes that did not converge (max_iter reached or a solver warning): {pairs}. A verdict on "
            f"these pairs rests on a probe that did not converge; the other {len(rec) - sum(b for b, _ in bad.values())} "
            f"converged{most}."]


def findings_caveats(results: pd.DataFrame) -> list[str]:
    """Lines right under the Findings heading: verdicts that rest on a probe that did not converge."""
    bad = unconverged_probes(results)
    if not bad:
        return []
    pairs = ", ".join(f"{ds} / {m} ({p})" for ds, m, p in bad)
    return [f"**Not converged**: the linear probes of {pairs} did not all converge (result JSON `probe.converged`); "
            "every verdict on these (task, method) pairs rests in part on such a probe.", ""]


def _setting_groups(cfg: dict[str, Any], dom: str) -> list[tuple[str, str, list[str]]]:
    """(model, recipe, methods) of a domain's trained methods, grouped by their resolved settings."""
    d = cfg["domains"][dom]
    groups: dict[tuple[str, str], list[str]] = {}
    for method in cfg.get("methods_run", []):
        if method == "none" or method not in cfg.get("methods", {}):
            continue
        job = resolve_pretrain(cfg, d["corpus"], method)
        m, t = job.model, job.train
        model = (f"{m['arch']} dim {m['dim']} × {m['depth']} layers, {m['heads']} heads, MLP ratio "
                 f"{m.get('mlp_ratio', 4)}, {m.get('pos_embedding', 'learned')} positions")
        recipe = (f"{t.steps:,} steps × batch {t.batch_size}, AdamW lr {t.lr}, weight decay {t.weight_decay}, "
                  f"{t.warmup_steps:,} warm-up steps, gradient clipping {t.grad_clip if t.grad_clip else 'none'}")
        groups.setdefault((model, recipe), []).append(method)
    return [(model, recipe, ms) for (model, recipe), ms in groups.items()]


def comparability_notes(cfg: dict[str, Any]) -> list[str]:
    """Under the Findings heading: every domain whose methods were pretrained with different models
    (width, depth, ...), steps or optimizer settings, from the jobs as :func:`resolve_pretrain`
    resolves them. A verdict between such methods compares the method and its settings together."""
    lines = []
    for dom in cfg.get("domains", {}):
        groups = _setting_groups(cfg, dom)
        if len(groups) < 2:
            continue
        groups.sort(key=lambda g: -len(g[2]))
        (base_model, base_recipe, base_ms), others = groups[0], groups[1:]
        parts = []
        for model, recipe, ms in others:
            own = "its own" if len(ms) == 1 else "their own"
            what = [f"{own} model ({model})" if model != base_model else "",
                    f"{own} recipe ({recipe})" if recipe != base_recipe else ""]
            parts.append(f"{', '.join(ms)} with " + " and ".join(w for w in what if w))
        lines.append(f"**Settings differ between methods** in {dom}: {'; '.join(parts)}; "
                     f"{', '.join(base_ms)} with {base_model}, {base_recipe}. A verdict between methods of different "
                     "settings compares each method together with its settings, not the method alone.")
    lines += [METHOD_NOTES[m] for m in cfg.get("methods_run", []) if m in METHOD_NOTES]
    return [*lines, ""] if lines else []


def display_names(metas: dict[tuple[str, str, int], dict]) -> dict[str, str]:
    """method -> the ``display_name`` its checkpoints' ``meta.json`` record (the method class's
    attribute); methods without one are shown by their config name (:func:`.stats.display_name`)."""
    out: dict[str, str] = {}
    for (_, method, _), meta in metas.items():
        name = meta.get("display_name")
        if isinstance(name, str) and name.strip() and method not in out:
            out[method] = name.strip()
    return out


def _findings(results: pd.DataFrame, tests_by_kind: dict[str, dict], primary: dict[tuple[str, str], str],
              figures_dir: Path, out_md: Path, tables_dir: Path, *, names: dict[str, str] | None = None,
              order: list[str] | None = None, report_cfg: dict[str, Any] | None = None) -> list[str]:
    """The findings section: every task and protocol on its primary split kind (the one with most units);
    ``comparisons.csv`` (every ordered pair, design-aware rows and the fold-unit rows conditional on the
    checkpoints), ``headline.csv``, ``variance_components.csv`` and ``power.csv``. ``report_cfg``: the
    config's ``report`` section (``compare``, ``target_delta``)."""
    from .stats import compare_methods, findings_markdown

    if results.empty:
        return ["## Findings", "", "No results yet: nothing to compare."]
    rc = report_cfg or {}
    want = [primary.get((ds, p)) for ds, p in results[["dataset", "protocol"]].itertuples(index=False, name=None)]
    keep = results["split_kind"].to_numpy() == np.asarray(want, dtype=object)
    df = results.loc[keep, ["dataset", "method", "protocol", "unit", "test", "metric"]].reset_index(drop=True)
    tests = {key: t for kind, fam in tests_by_kind.items() for key, t in fam.items() if primary.get(key) == kind}
    comp = compare_methods(df, references=None, tests=tests)
    write_bytes_atomic(tables_dir / "comparisons.csv", comp.to_csv(index=False).encode("utf-8"))
    lines = findings_markdown(df, figures_dir=figures_dir, out_md=out_md, metric_units=METRIC_UNITS, tests=tests,
                              names=names, order=order, compare=rc.get("compare") or (),
                              target_delta=rc.get("target_delta"), tables_dir=tables_dir)
    kinds = ", ".join(f"{ds} {p}: {k}" for (ds, p), k in primary.items() if p != "classical")
    lines[2:2] = [f"Split kind each task's statements use, per protocol (the one with the most units): {kinds}. Every pairwise "
                  f"comparison: [comparisons.csv]({_link(tables_dir / 'comparisons.csv', out_md)}).", ""]
    return lines


class StaleResultsError(ConfigError):
    """Results whose recorded settings hash differs from the current config's."""


def refuse_stale(results: pd.DataFrame, cfg: dict[str, Any], registry: dict[str, dict], show: int = 10) -> None:
    """Stop when a result was computed with other settings than the config's now (its
    ``settings_hash`` against :func:`pipeline_src.plan.eval_settings_hash`), naming the files and
    the command that rebuilds them: the report never prints the new config above old numbers."""
    if results.empty:
        return
    want: dict[tuple[str, str], str] = {}
    stale: list[tuple[str, str]] = []
    for r in results[["dataset", "protocol", "settings_hash", "path"]].itertuples(index=False):
        key = (r.dataset, r.protocol)
        if key not in want:
            want[key] = eval_settings_hash(cfg, registry, r.dataset, r.protocol) if r.dataset in registry else ""
        if want[key] and r.settings_hash != want[key]:
            stale.append((r.path, f"evaluate_{r.protocol}_{r.dataset}"))
    if stale:
        rules = " ".join(dict.fromkeys(rule for _, rule in stale))
        listed = "; ".join(p for p, _ in stale[:show]) + (f"; and {len(stale) - show} more" if len(stale) > show else "")
        raise StaleResultsError(
            f"{len(stale)} result(s) were computed with other settings than the current config (their settings_hash "
            f"differs): {listed}. Rebuild them with: snakemake --cores 2 --forcerun {rules} reports/all.md")


def _method_notes(metas: dict[tuple[str, str, int], dict]) -> dict[str, str]:
    """method -> "not domain-agnostic", from the pretraining metadata (``meta.json``)."""
    flags: dict[str, bool] = {}
    for (_, m, _), meta in metas.items():
        if "domain_agnostic" in meta:
            flags[m] = flags.get(m, True) and bool(meta["domain_agnostic"])
    return {m: "not domain-agnostic" for m, ok in flags.items() if not ok}


def _applicable(registry: dict[str, dict]) -> Any:
    def check(ds: str, method: str, protocol: str) -> bool:
        if protocol != "classical":
            return True
        kind = registry.get(ds, {}).get("input", {}).get("kind")
        return kind is None or method in baselines_for(kind)
    return check


def _default_pairs(cfg: dict[str, Any], registry: dict[str, dict], datasets: list[str]) -> list[tuple[str, str]]:
    """The (method, protocol) rows the config plans for any of ``datasets``: every method under
    every protocol, plus the classical baselines that apply to these datasets' input kinds."""
    ev = cfg.get("evaluate", {})
    pairs = [(m, p) for p in ev.get("protocols", ["linear"]) for m in cfg.get("methods_run", [])]
    in_config = {t for d in cfg["domains"].values() for t in d["tasks"]}
    if ev.get("baselines"):
        for ds in datasets:
            kind = registry.get(ds, {}).get("input", {}).get("kind")
            if ds in in_config and kind:
                pairs += [(b, "classical") for b in baselines_for(kind)]
    return list(dict.fromkeys(pairs))


def _metrics(datasets: list[str], registry: dict[str, dict], agg: pd.DataFrame) -> dict[str, str]:
    out = {}
    for ds in datasets:
        m = registry.get(ds, {}).get("metric")
        if m is None and not agg.empty and (agg["dataset"] == ds).any():
            m = str(agg.loc[agg["dataset"] == ds, "metric"].iloc[0])
        out[ds] = m or ""
    return out


def _header(cfg: dict[str, Any], config_path: str, wall: dict[str, Any], wall_time_s: float | None,
            metas: dict[tuple[str, str, int], dict], n_extra: int, status: dict[str, int]) -> list[str]:
    from .environment import hardware, versions

    hw, sw = hardware(), versions()
    lines = ["# maskbench report", "",
             f"- **Config**: `{_display_path(config_path)}` (sha256 `{_file_sha256(config_path)[:16]}`, "
             f"settings hash `{config_hash(cfg)}`); methods {', '.join(cfg.get('methods_run', []))}; "
             f"seeds {', '.join(str(s) for s in cfg.get('seeds', []))}; protocols "
             f"{', '.join(cfg.get('evaluate', {}).get('protocols', []))}"
             f"{' + classical baselines' if cfg.get('evaluate', {}).get('baselines') else ''}."]
    used = [d["corpus"] for d in cfg["domains"].values()] + [t for d in cfg["domains"].values() for t in d["tasks"]]
    subs = [text for name, text in SUBSTITUTES.items() if name in used]
    if subs:
        lines.append("- **Dataset substitutes**: " + " ".join(subs))
    ev = cfg.get("evaluate", {})
    sub = "; ".join(f"{dom}: {d['corpus']} {_samples(d.get('corpus_subsample'))}" for dom, d in cfg["domains"].items())
    rows = ev.get("max_train_rows")
    rows_text = "all" if rows is None else (f"at most {rows:,} (a fixed hash-chosen subset, stratified by label, the same "
                                            "for every method and seed)")
    lines.append(f"- **Subsampling**: pretraining corpora — {sub}. Training rows per split: {rows_text}; valid and "
                 "test folds are never subsampled (fold sizes below).")
    seeds = "; ".join(f"{dom}: {', '.join(str(k) for k in pretrain_seeds(cfg, dom))}" for dom in cfg["domains"])
    ft = ev.get("finetune", {})
    lines.append(f"- **Units**: pretraining seeds — {seeds}; a result is one (pretraining seed, split) unit, the same "
                 f"units for every method. Finetuning: tasks {', '.join(ft.get('tasks') or ['all'])}, split kinds "
                 f"{', '.join(ft.get('split_kinds') or ['all'])}, at most {ft.get('epochs')} epochs (patience "
                 f"{ft.get('patience')}), lr {ft.get('lrs') or ft.get('lr')}, {ft.get('schedule', 'constant')} schedule.")
    lines.append("- **Models and pretraining** per domain:")
    for dom, d in cfg["domains"].items():
        m, p = d["model"], d["pretrain"]
        params = next((meta.get("encoder_params") for (c, _, _), meta in metas.items() if c == d["corpus"]
                       and meta.get("encoder_params")), None)
        extra = f", {m.get('num_latents', 64)} latents" if m.get("arch") == "perceiver" else ""
        lines.append(f"  - {dom} ({d['corpus']}): {m['arch']} dim {m['dim']}, depth {m['depth']}, heads {m['heads']}{extra}, "
                     f"max_len {m['max_len']}" + (f", {params / 1e6:.2f}M encoder parameters" if params else "")
                     + f"; {p['steps']} steps × batch {p['batch_size']}, lr {p['lr']}; tasks {', '.join(d['tasks'])}; "
                     f"splits {', '.join(d.get('splits', ['fixed']))}" + _own_models(cfg, dom) + ".")
    ram = hw["ram_bytes"]
    lines.append(f"- **Hardware** (machine that built the report): {hw['cpu']}, {hw['cores']} usable cores "
                 f"({hw['logical_cpus']} logical), {'n/a' if ram is None else f'{ram / 2**30:.1f} GiB'} RAM, "
                 f"GPU: {'not recorded' if hw['gpus'] is None else ', '.join(hw['gpus']) or 'none'}; {hw['os']}. The device each run used is in the "
                 "compute table and in every result JSON.")
    wt = (f"{_fmt_s(wall['sum_s'])} summed over {wall['jobs']} Snakemake jobs (data/benchmarks/**.tsv, job time; "
          f"jobs may overlap) and {_fmt_s(wall['span_s'])} from the earliest job start to the latest job end "
          "(benchmark file mtimes; elapsed time, includes idle gaps between invocations)")
    if wall_time_s is not None:
        wt = f"{_fmt_s(wall_time_s)} as measured by the workflow; " + wt
    lines.append(f"- **Total wall time**: {wt}.")
    lines.append("- **Software**: " + ", ".join(f"{k} {v}" for k, v in sw.items()) + ".")
    if status["with_plan"]:
        lines.append(f"- **Runs**: {status['planned']} planned, {status['present']} with a result, "
                     f"{status['failed']} failed (log present), {status['not_run']} not run"
                     + (f"; {n_extra} result files outside the plan were ignored" if n_extra else "") + ".")
    else:
        lines.append(f"- **Runs**: {status['present']} result files used; no list of planned runs was given, "
                     "so a missing cell is \"failed\" only where an evaluate log exists.")
    return lines


def _diagnostic_section(costs: pd.DataFrame) -> list[str]:
    """Per (corpus, method): the held-out reconstruction ratio over the pretraining seeds."""
    if costs.empty or costs["heldout_ratio"].isna().all():
        return ["No pretrained model with a held-out diagnostic yet."]
    lines = ["Every pretrained model reconstructs the same held-out slice of its corpus (rows kept out of pretraining) "
             "under the same random masks at one fixed ratio; the loss (cross-entropy in nats per masked token, or MSE "
             "on standardized features) is divided by the corpus's frequency baseline: the entropy of the training "
             "corpus's token frequencies, or 1.0 for standardized continuous inputs. **1.0 means nothing learned beyond "
             "token frequencies; lower is better.** The per-seed values are in the compute table.",
             "",
             "For token corpora, the order-free reference is the same held-out loss for a predictor that reads no "
             "order: each masked token from the counts of the sample's visible tokens, smoothed towards the corpus "
             "frequencies (the best of a few smoothing weights on this slice), the first position from the corpus's "
             "first tokens. A model at or above it has learned no more than a bag of its visible tokens.", "",
             *_scoring_note(costs), "",
             "| corpus | method | held-out loss / baseline (mean ± std, n seeds) | held-out loss | baseline | "
             "order-free reference / baseline | final training loss / baseline | after the method's own "
             "adaptation / baseline |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (corpus, method), g in costs.groupby(["corpus", "method"], sort=False):
        r = g["heldout_ratio"].dropna()
        if r.empty:
            continue
        std = f" ± {r.std(ddof=1):.3f}" if len(r) > 1 else ""
        lines.append(f"| {corpus} | {method} | {r.mean():.3f}{std} (n={len(r)}) | {g['heldout_loss'].mean():.3f} | "
                     f"{g['baseline'].mean():.3f} | {_fmt_num(g['reference_ratio'].mean(), 3)} | "
                     f"{_fmt_num(g['final_loss_ratio'].mean(), 3)} | {_fmt_num(g['adapted_ratio'].mean(), 3)} |")
    lines += _bag_of_tokens_lines(costs)
    lines += ["", *_diversity_section(costs)]
    return lines


def _bag_of_tokens_lines(costs: pd.DataFrame) -> list[str]:
    """One sentence per (corpus, method) whose held-out ratio of some seed is at or above the
    order-free reference of that run."""
    out = []
    for (corpus, method), g in costs.groupby(["corpus", "method"], sort=False):
        g = g.dropna(subset=["heldout_ratio", "reference_ratio"])
        bag = g[g["heldout_ratio"] >= g["reference_ratio"]]
        if bag.empty:
            continue
        vals = ", ".join(f"{r:.3f} ≥ {ref:.3f}" for r, ref in zip(bag["heldout_ratio"], bag["reference_ratio"]))
        seeds = ", ".join(str(int(x)) for x in bag["seed"])
        out.append(f"- **{corpus} / `{method}`: no more than a bag of its tokens** (seed{'s' if len(bag) > 1 else ''} "
                   f"{seeds} of {len(g)}: held-out ratio {vals}, the order-free reference): "
                   f"{'these models reconstruct' if len(bag) > 1 else 'this model reconstructs'} the held-out slice no "
                   "better than a predictor that counts the visible tokens and reads no order.")
    return ([""] + out) if out else []


def _collapse_summary(costs: pd.DataFrame) -> list[str]:
    """One line under the findings per (corpus, method) with a collapsed run (from meta.json)."""
    out = []
    for (corpus, method), g in costs.groupby(["corpus", "method"], sort=False):
        bad = g[g["mask_verdict"] == "collapsed"]
        if not bad.empty:
            out.append(f"- **Masks collapsed: `{method}` on {corpus}** in {len(bad)} of {int(g['mask_verdict'].notna().sum())} "
                       "pretraining seeds: at the end of pretraining it masks nearly the same inputs whatever the draw; "
                       "its numbers above are those of that collapse (\"Did pretraining learn?\", mask diversity).")
    return ["", *out] if out else []


def _diversity_cells(r: dict[str, Any]) -> list[str]:
    def pair(a: Any, b: Any, digits: int = 2) -> str:
        return "n/a" if _missing(a) else f"{_fmt_num(a, digits)} ({_fmt_num(b, digits)})"
    return [pair(r["mask_entropy"], r["random_entropy"]), _fmt_num(r["entropy_ratio"], 2),
            pair(r["mask_jaccard"], r["random_jaccard"]), pair(r["identical_share"], r["random_identical_share"]),
            _fmt_num(r["distinct_share"], 2), "n/a" if _missing(r["mask_verdict"]) else f"**{r['mask_verdict']}**"
            if r["mask_verdict"] == "collapsed" else str(r["mask_verdict"])]


def _diversity_section(costs: pd.DataFrame) -> list[str]:
    """Mask diversity per (corpus, method, seed) from meta.json, the verdicts, and a finding for
    every (corpus, method) with a collapsed run."""
    lines = ["### Mask diversity", "",
             "At the end of every pretraining run its method draws two masks for each held-out sample from its final "
             "weights (two draws, different random numbers), and random masking draws two with the same number of "
             "masked tokens per sample (in brackets). **Masking entropy**: the normalized entropy of how often each "
             "input is masked, per position for fixed-layout inputs (one token per feature) and per token value for "
             "sequences, each value's masking rate taken relative to its frequency in the slice (1 = every input masked "
             "at the same rate, as random masking does). **Jaccard**: the mean overlap |A ∩ B| / |A ∪ B| of a sample's "
             "two masks; **identical**: the share of samples whose two masks are the same; **distinct**: distinct masks "
             "/ samples of one draw. Verdict **collapsed** when the masking entropy is below 0.8 of random masking's or "
             "identical pairs exceed random masking's share by more than 0.25 (thresholds and why: "
             "docs/mask_diversity.md); nothing about what an input means is used.", "",
             "| corpus | method | seed | held-out loss / baseline | masking entropy (random) | entropy / random | "
             "Jaccard of two views (random) | identical pairs (random) | distinct masks / samples | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in costs.to_dict("records"):
        if _missing(r["steps"]) and _missing(r["heldout_ratio"]) and r["method"] != "none":
            continue
        cells = (["n/a (no masks)"] * 5 + ["n/a"]) if r["method"] == "none" else _diversity_cells(r)
        lines.append(f"| {r['corpus']} | {r['method']} | {r['seed']} | {_fmt_num(r['heldout_ratio'], 3)} | "
                     + " | ".join(cells) + " |")
    finds = []
    for (corpus, method), g in costs.groupby(["corpus", "method"], sort=False):
        bad = g[g["mask_verdict"] == "collapsed"]
        judged = g["mask_verdict"].notna().sum()
        if bad.empty:
            continue
        seeds = ", ".join(str(int(x)) for x in bad["seed"])
        why = bad["mask_reasons"].dropna()
        finds.append(f"- **Masks collapsed: `{method}` on {corpus}** (seed{'s' if len(bad) > 1 else ''} {seeds} of "
                     f"{judged}{'; ' + why.iloc[0] if len(why) else ''}). At the end of pretraining these models mask "
                     "nearly the same inputs whatever the random draw, so they trained on a nearly fixed view of their "
                     "input; their held-out and downstream numbers are those of that collapse, a finding about the "
                     "method at this run's scale and settings.")
    if finds:
        lines += ["", *finds]
    elif costs["mask_verdict"].notna().any():
        lines += ["", "No run's masks collapsed."]
    return lines


def _scoring_note(costs: pd.DataFrame) -> list[str]:
    """How the held-out loss was scored, as the checkpoints' ``meta.json`` (``diagnostic.scoring``) says."""
    said = sorted({s for s in costs["scoring"].dropna()}) if "scoring" in costs else []
    how = ("; ".join(said) if said else "not recorded by these checkpoints (written before the scoring was "
           "recorded; rerun their pretraining)")
    return [f"**How every method is scored**: {how}. SMA and SMA+R2MAE train on their own attention-guided "
            "masks, so these random masks are not the masks they learned on; the test is the same for all. The last "
            "column is a method's own test-time adaptation, where it has one (MetaMAE: one inner step on the "
            "latent with the visible tokens as its support, no masked value used; in training the support "
            "also holds nearby masked tokens), n/a otherwise."]


def _fold_section(sizes: pd.DataFrame, registry: dict[str, dict]) -> list[str]:
    """Rows per fold of every task and split kind (train after subsampling); positives for binary tasks."""
    if sizes.empty:
        return ["No results yet."]

    def rng(r: Any, p: str, k: str) -> str:
        lo, hi = r[f"{p}_{k}_min"], r[f"{p}_{k}_max"]
        if pd.isna(lo):
            return ""
        return f"{int(lo):,}" if lo == hi else f"{int(lo):,}–{int(hi):,}"

    lines = ["Valid and test folds are never subsampled; the training part may be (`evaluate.max_train_rows`, "
             "stratified by label). Ranges are over the splits of a kind; `(+k)` are positives of a binary task.", "",
             "| task | split kind | splits | train | valid | test |", "|---|---|---:|---:|---:|---:|"]
    for r in sizes.to_dict("records"):
        binary = registry.get(r["dataset"], {}).get("task") == "binary"
        cells = [rng(r, "n", k) + (f" (+{rng(r, 'pos', k)})" if binary and rng(r, "pos", k) else "")
                 for k in ("train", "valid", "test")]
        lines.append(f"| {r['dataset']} | {r['split_kind']} | {int(r['splits'])} | " + " | ".join(cells) + " |")
    return lines


def describe_settings(model: Any, train: TrainSpec) -> str:
    """A pretraining job's model and recipe as its checkpoint's ``meta.json`` records them
    (``model_cfg``, ``train_cfg``), from :func:`pipeline_src.spec.resolve_pretrain`'s resolution."""
    m, t = model, train
    latents = f", {m.get('num_latents')} latents" if m.get("arch") == "perceiver" else ""
    return (f"{m['arch']} dim {m['dim']}, depth {m['depth']}, heads {m['heads']}{latents}, "
            f"{m.get('pos_embedding', 'learned')} positions, max length {m['max_len']}; {t.steps:,} steps × batch "
            f"{t.batch_size}, lr {t.lr}, weight decay {t.weight_decay}, warm-up {t.warmup_steps} steps")


def _own_models(cfg: dict[str, Any], dom: str) -> str:
    """``; <method>: its own settings, ...`` for each method of the run that a domain gives its own
    model or recipe (``model_by_method`` / ``pretrain_by_method``), resolved as the job resolves them."""
    d = cfg["domains"][dom]
    own = set(d.get("model_by_method", {})) | set(d.get("pretrain_by_method", {}))
    base = describe_settings(d["model"], TrainSpec.from_mapping(d["pretrain"], f"domains.{dom}.pretrain"))
    parts = []
    for method in [m for m in cfg.get("methods_run", []) if m in own]:
        job = resolve_pretrain(cfg, d["corpus"], method)
        line = describe_settings(job.model, job.train)
        if line != base:
            parts.append(f"; {method}: its own settings, {line}")
    return "".join(parts)


def _our_settings(cfg: dict[str, Any], datasets: list[str]) -> str:
    """Ours, in the words of the papers' settings line: corpus and size, model, steps x batch, seeds, splits."""
    parts = []
    for dom, d in cfg["domains"].items():
        tasks = [t for t in d["tasks"] if t in datasets]
        if not tasks:
            continue
        m, p = d["model"], d["pretrain"]
        extra = f", {m.get('num_latents', 64)} latents" if m.get("arch") == "perceiver" else ""
        kinds = sorted({k for t in tasks for k in (d.get("task_splits", {}).get(t) or d.get("splits", ["fixed"]))})
        parts.append(f"{dom}: pretrained on {d['corpus']} ({_samples(d.get('corpus_subsample'))}); {m['arch']}, "
                     f"{m['depth']} layers, width {m['dim']}, {m['heads']} heads{extra}, max length {m['max_len']}; "
                     f"{p['steps']:,} steps x batch {p['batch_size']}, lr {p['lr']}; pretraining seeds "
                     f"{', '.join(str(s) for s in pretrain_seeds(cfg, dom))}; splits {', '.join(kinds)}"
                     + (f" ({own[2:]})" if (own := _own_models(cfg, dom)) else ""))
    ev = cfg["evaluate"]
    prot = ", ".join(ev["protocols"])
    return "; ".join(parts) + f"; protocols {prot}" + (" + classical baselines" if ev.get("baselines") else "")


def _cost_table(costs: pd.DataFrame) -> str:
    head = ["domain", "corpus", "method", "seed", "steps", "job wall time (benchmark s)", "training time (s)",
            "tokens/s", "peak memory (MiB)", "max RSS (MiB, benchmark)", "final loss", "final loss / baseline",
            "held-out loss / baseline", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 10 + ["---"]) + "|"]
    for r in costs.to_dict("records"):
        missing = _missing(r["steps"]) and _missing(r["job_wall_s"])
        agnostic = r["domain_agnostic"]
        flag = " (not domain-agnostic)" if not _missing(agnostic) and not bool(agnostic) else ""
        vals = [r["domain"], r["corpus"], r["method"] + flag, r["seed"],
                "not run" if missing else _fmt_num(r["steps"]), _fmt_num(r["job_wall_s"]), _fmt_num(r["train_wall_s"]),
                _fmt_num(r["tokens_per_s"], 0), _fmt_num(r["peak_memory_mb"]), _fmt_num(r["max_rss_mb"]),
                _fmt_num(r["final_loss"], 4), _fmt_num(r["final_loss_ratio"], 3), _fmt_num(r["heldout_ratio"], 3),
                _fmt_num(r["device"])]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    return "\n".join(lines)


def _finetune_figures(results: pd.DataFrame, primary: dict[tuple[str, str], str], figures_dir: Path,
                      out_md: Path) -> list[str]:
    """Validation-metric curves of the finetune runs, per method, one figure per finetuned task
    (its primary split kind)."""
    import json

    from .figures import finetune_curves

    ft = results[results["protocol"] == "finetune"] if not results.empty else results
    if ft.empty:
        return []
    lines = ["### Finetune validation curves", "",
             "Validation metric per epoch of the chosen learning rate, mean over the runs (units) that reached the epoch "
             "(early stopping ends runs at different epochs), band = min–max.", ""]
    for ds in sorted(set(ft["dataset"])):
        sub = ft[(ft["dataset"] == ds) & (ft["split_kind"] == primary.get((ds, "finetune")))]
        recs = []
        for path in sub["path"]:
            try:
                recs.append(json.loads(Path(path).read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        try:
            fig = finetune_curves(ds, recs, figures_dir / f"finetune_{ds}.png")
        except Exception as e:
            lines += [f"- {ds}: no figure ({type(e).__name__}: {e}).", ""]
            continue
        lines += [f"![finetune validation curves, {ds}]({_link(fig, out_md)})" if fig else f"- {ds}: no curves recorded.", ""]
    return lines


def _guided(cfg: dict[str, Any], dom: str, method: str, masks_root: Path, checkpoints_root: str | Path) -> bool:
    """Whether the report draws ``method``'s masks on the domain's corpus: a mask file exists, or the
    checkpoint's meta.json says its class makes guided masks (the report never loads a method class)."""
    corpus = cfg["domains"][dom]["corpus"]
    if Path(masks_path(corpus, method, masks_root)).exists():
        return True
    try:
        meta = json.loads(Path(meta_path(corpus, method, pretrain_seeds(cfg, dom)[0], checkpoints_root)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("guided_masks"))


def _mask_diversity_line(costs: pd.DataFrame | None, corpus: str, method: str) -> list[str]:
    """The recorded mask diversity of (corpus, method), per seed, for the text beside its figure."""
    if costs is None or costs.empty:
        return []
    g = costs[(costs["corpus"] == corpus) & (costs["method"] == method) & costs["mask_verdict"].notna()]
    if g.empty:
        return []
    parts = [f"seed {int(r['seed'])}: entropy {_fmt_num(r['mask_entropy'], 2)} (random {_fmt_num(r['random_entropy'], 2)}), "
             f"Jaccard {_fmt_num(r['mask_jaccard'], 2)} ({_fmt_num(r['random_jaccard'], 2)}), identical pairs "
             f"{_fmt_num(r['identical_share'], 2)}, {r['mask_verdict']}" for r in g.to_dict("records")]
    return ["", "Mask diversity at the end of pretraining (held-out slice; \"Did pretraining learn?\"): "
            + "; ".join(parts) + "."]


def _mask_section(cfg: dict[str, Any], masks_root: Path, figures_dir: Path, out_md: Path, n_show: int = 4,
                  checkpoints_root: str | Path = "data/checkpoints",
                  costs: pd.DataFrame | None = None) -> list[str]:
    from .figures import mask_figure
    from .masks import masked_text, read_mask_draws

    lines: list[str] = []
    for dom, d in cfg["domains"].items():
        corpus = d["corpus"]
        seed = pretrain_seeds(cfg, dom)[0]
        unrun = [m for m in cfg.get("methods_run", []) if m != "none"
                 and not Path(meta_path(corpus, m, seed, checkpoints_root)).exists()
                 and not Path(masks_path(corpus, m, masks_root)).exists()]
        if unrun:
            lines.append(f"- {corpus}: no figure yet for {', '.join(f'`{m}`' for m in unrun)} (no checkpoint: its "
                         "meta.json says whether the method draws guided masks).")
        for method in [m for m in cfg.get("methods_run", []) if _guided(cfg, dom, m, masks_root, checkpoints_root)]:
            path = Path(masks_path(corpus, method, masks_root))
            if not path.exists():
                lines.append(f"- {corpus} / {method}: no figure (no `{_display_path(path)}`: the `masks` step has not run).")
                continue
            try:
                draws = read_mask_draws(path)
                fig = mask_figure(draws, figures_dir / f"mask_{corpus}_{method}.png")
            except Exception as e:  # one broken mask file must not stop the report
                lines.append(f"- {corpus} / {method}: no figure ({type(e).__name__}: {e}).")
                continue
            lines += ["", f"**{dom} — {corpus}, `{method}`** (mask ratio {draws.ratio:.2f})", "",
                      f"![{method} masks on {corpus}]({_link(fig, out_md)})", ""]
            if draws.kind == "discrete":
                what = "SMILES" if dom == "chemistry" or corpus in ("moses", "guacamol", "chembl") else "sequence"
                lines.append(f"Masked characters replaced by `_` ({what}, first {n_show} samples, first 100 positions):")
                lines.append("")
                lines.append("```text")
                for s in range(min(n_show, len(draws.labels))):
                    labels = draws.labels[s][:100]
                    lines.append(f"sample {s}  input : {''.join(labels)}")
                    for k in range(draws.masks.shape[0]):
                        lines.append(f"          draw {k + 1}: {masked_text(labels, draws.masks[k, s])}")
                lines.append("```")
            else:
                from .masks import mask_rate_by_label

                top = mask_rate_by_label(draws, min_count=1)[:6]
                lines.append("Most often masked features: " + ", ".join(f"{f} ({r:.0%})" for f, r, _ in top) + ".")
            lines += _mask_diversity_line(costs, corpus, method)
    return lines


def build_report(config_path: str, results_root: str = "data/results", out_md: str = "reports/all.md",
                 tables_dir: str = "reports/tables", figures_dir: str = "reports/figures",
                 expected: list[str] | None = None, wall_time_s: float | None = None, *,
                 reference_path: str = REFERENCE_PATH, checkpoints_root: str = "data/checkpoints",
                 benchmarks_root: str = "data/benchmarks", logs_root: str = "data/logs",
                 masks_root: str = "data/masks", mask_figures: bool = True) -> None:
    """Write ``out_md`` (atomically), the CSV copies of its tables and its figures.

    ``expected``: the planned result paths (``.../<dataset>/<method>/<protocol>/<split>/seed<k>.json``);
    with it, results outside the plan are ignored and a planned run without a result is "failed"
    when its log exists, else "not run". Without it, every result under ``results_root`` is used.
    """
    from .compute import pretrain_costs, read_loss_log, total_wall_time
    from .figures import loss_curves, task_bars

    cfg = load_config(config_path)
    try:   # the plan, the metrics and the staleness check all need it: no report without it
        registry = load_registry(cfg["registry"])
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_path}: the report cannot load the dataset registry {cfg['registry']!r} "
                          f"(the config's 'registry'): {e}") from None
    ref_tables = yaml.safe_load(Path(reference_path).read_text(encoding="utf-8"))["tables"] \
        if Path(reference_path).exists() else {}
    out_md_p, tables_p, figures_p = Path(out_md), Path(tables_dir), Path(figures_dir)

    all_results = load_results(results_root)
    if expected is not None:
        keys: list[ResultKey] | None = [parse_result_path(p) for p in expected]
    else:  # the plan of this config (pipeline_src/plan.py), as the workflow made it
        keys = planned_results(cfg, registry)
    results = restrict_to(all_results, keys) if keys is not None else all_results
    n_extra = len(all_results) - len(results)
    refuse_stale(results, cfg, registry)
    tests_by_kind, primary = _statistics(results)

    def best_of(kind: str) -> dict[tuple[str, str], set[str]]:
        from .stats import significantly_best

        fam = tests_by_kind.get(kind, {})
        if not fam:
            return {}
        sub = results[results["split_kind"] == kind][["dataset", "method", "protocol", "unit", "test", "metric"]]
        return significantly_best(sub, fam)
    agg = aggregate(results)
    present = {ResultKey(r.dataset, r.method, r.protocol, r.split, int(r.seed))
               for r in results[["dataset", "method", "protocol", "split", "seed"]].itertuples(index=False)}
    costs, metas = pretrain_costs(cfg, checkpoints_root, benchmarks_root)
    config_datasets = {t for d in cfg["domains"].values() for t in d["tasks"]}
    src = CellSource(agg, present, keys, logs_root, config_datasets, _applicable(registry))
    methods = list(cfg.get("methods_run", []))
    notes = _method_notes(metas)
    names = display_names(metas)

    tables: list[Table] = []
    covered: set[str] = set()
    for name in PAPER_TABLES:
        ref = ref_tables.get(name)
        if ref is None:
            continue
        datasets = list(ref["datasets"])
        if not set(datasets) & (config_datasets | set(agg.get("dataset", pd.Series(dtype=str)))):
            continue  # a domain this run did not include: no grid of "not run"
        covered |= set(datasets)
        metrics = _metrics(datasets, registry, agg)
        protocols = ("linear",) if ref.get("protocol") == "linear" else None
        pairs = _default_pairs(cfg, registry, datasets)
        if protocols is not None:
            pairs = [mp for mp in pairs if mp[1] in protocols] or [(m, "linear") for m in methods]
        if name == "moleculenet":
            kinds = [s for d in cfg["domains"].values() if set(d["tasks"]) & set(datasets) for s in d.get("splits", [])]
            kinds = list(dict.fromkeys([*kinds, *src.split_kinds(datasets)])) or [str(ref.get("split", "scaffold"))]
            for kind in kinds:
                t = build_table(f"moleculenet_{kind}", f"{ref['title']} — our split: {kind}", datasets, metrics, kind,
                                src, methods, notes, ref, protocols, pairs, best=best_of(kind), names=names)
                if kind != ref.get("split", kind):
                    t.notes.append(f"The reported rows use the {ref.get('split')} split; ours here use {kind}.")
                tables.append(t)
        else:
            tables.append(build_table(name, ref["title"], datasets, metrics, "fixed", src, methods, notes, ref,
                                      protocols, pairs, best=best_of("fixed"), names=names))
    other = [ds for ds in dict.fromkeys([*sorted(config_datasets), *agg.get("dataset", pd.Series(dtype=str)).tolist()])
             if ds not in covered]
    if other:
        metrics = _metrics(other, registry, agg)
        kinds = [s for d in cfg["domains"].values() if set(d["tasks"]) & set(other) for s in d.get("splits", [])]
        for kind in list(dict.fromkeys([*kinds, *src.split_kinds(other)])) or ["fixed"]:
            tables.append(build_table(f"other_{kind}", f"Other tasks (no paper table), split {kind}", other, metrics,
                                      kind, src, methods, notes, None, None, _default_pairs(cfg, registry, other),
                                      best=best_of(kind), names=names))

    tables_p.mkdir(parents=True, exist_ok=True)
    for t in tables:
        ref = ref_tables.get(t.key.split("_")[0]) if t.key.split("_")[0] in PAPER_TABLES else None
        if ref is not None:
            proto = ref.get("protocol", "finetune")
            t.notes.append(f"Protocol of the reported rows: {proto}; our rows give every protocol this config ran "
                           f"({'compare the finetune rows' if proto == 'finetune' else 'compare the linear rows'}).")
            if ref.get("settings"):
                t.notes.append(f"Reported rows' settings: {ref['settings']}.")
            t.notes.append(f"Our settings: {_our_settings(cfg, t.datasets)}.")
        t.notes += probe_notes(results, t.datasets, t.split_kind)
        write_csv(t, tables_p)
    write_bytes_atomic(tables_p / "compute_cost.csv", costs.to_csv(index=False).encode("utf-8"))

    # figures
    fig_lines: list[str] = ["## Figures", "", "### Pretraining loss over the frequency baseline", ""]
    for dom, d in cfg["domains"].items():
        corpus = d["corpus"]
        seed = pretrain_seeds(cfg, dom)[0]
        logs = {m: read_loss_log(log_path(corpus, m, seed, checkpoints_root)) for m in methods if m != "none"}
        base = next((meta.get("diagnostic", {}).get("baseline") for (c, _, _), meta in metas.items()
                     if c == corpus and (meta.get("diagnostic") or {}).get("baseline")), None)
        try:
            fig = loss_curves(f"{corpus} (seed {seed})", logs, figures_p / f"loss_{corpus}.png", baseline=base)
        except Exception as e:
            fig, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "no pretraining log yet"
        fig_lines.append(f"![pretraining loss on {corpus}]({_link(fig, out_md_p)})" if fig is not None
                         else f"- {dom} ({corpus}): no loss figure ({why}).")
        fig_lines.append("")
    fig_lines.append("Training losses are on each method's own masks (ratios and loss terms differ: MetaMAE adds a "
                     "contrastive term), divided by the corpus's frequency baseline (1 = a model that knows only the token "
                     "frequencies); compare methods with the held-out reconstruction in \"Did pretraining learn?\".")
    fig_lines += ["", "### Per-task comparison", ""]
    all_metrics = _metrics(sorted(set(agg["dataset"])) if not agg.empty else [], registry, agg)
    for protocol in [p for p in ("finetune", "linear", "classical") if not agg.empty and (agg["protocol"] == p).any()]:
        sub = agg[agg["protocol"].isin([protocol, "classical"])] if protocol != "classical" else agg[agg["protocol"] == protocol]
        if protocol != "classical" or not (agg["protocol"] != "classical").any():
            try:
                fig = task_bars(sub, all_metrics, figures_p / f"tasks_{protocol}.png",
                                f"Test metric per task, {protocol} protocol (grey: classical baselines); error bars ± std")
                fig_lines += [f"![per-task comparison, {protocol}]({_link(fig, out_md_p)})", ""]
            except Exception as e:
                fig_lines += [f"- {protocol}: no figure ({type(e).__name__}: {e}).", ""]
    if agg.empty:
        fig_lines += ["- no results yet, no comparison figure.", ""]
    fig_lines += _finetune_figures(results, primary, figures_p, out_md_p)
    if mask_figures:
        fig_lines += ["### SMA masks (which tokens get masked)", "",
                      "Two mask draws from the same pretrained weights for a few samples (SMA Figure 2 / Table 7): "
                      "masks come from the first attention layer; the draws differ only in the random query subset."]
        fig_lines += _mask_section(cfg, Path(masks_root), figures_p, out_md_p, checkpoints_root=checkpoints_root, costs=costs)

    planned = len(keys) if keys is not None else len(results)
    failed = sum(1 for k in (keys or []) if k not in present and Path(k.log_path(logs_root)).exists())
    status = {"with_plan": keys is not None, "planned": planned, "present": len(present), "failed": failed,
              "not_run": (planned - len(present) - failed) if keys is not None else 0}
    wall = total_wall_time(benchmarks_root)

    md = _header(cfg, config_path, wall, wall_time_s, metas, n_extra, status)
    findings = _findings(results, tests_by_kind, primary, figures_p, out_md_p, tables_p, names=names, order=methods,
                          report_cfg=cfg.get("report"))
    findings[2:2] = comparability_notes(cfg) + findings_caveats(results)   # under the heading
    md += ["", *findings]
    md += _collapse_summary(costs)
    md += ["", "## How to read", "", HOW_TO_READ]
    md += ["## Did pretraining learn?", "", *_diagnostic_section(costs), ""]
    md += ["## Fold sizes", "", *_fold_section(fold_sizes(results), registry), ""]
    for t in tables:
        md += [f"## {t.title}", "", to_markdown(t), "",
               f"CSV: [{t.key}.csv]({_link(tables_p / f'{t.key}.csv', out_md_p)})", ""]
    md += ["## Compute cost of pretraining", "", _cost_table(costs), "",
           "Job wall time and max RSS come from Snakemake's benchmark files (whole job: loading, training, "
           "saving); training time, tokens/s (non-padding tokens) and peak memory (CUDA: max allocated; "
           "CPU: max RSS of the process) from the model's metadata.", "",
           f"CSV: [compute_cost.csv]({_link(tables_p / 'compute_cost.csv', out_md_p)})", ""]
    md += fig_lines
    if keys is not None:
        failed_keys = [k for k in keys if k not in present and Path(k.log_path(logs_root)).exists()]
        if failed_keys:
            md += ["", "## Failed runs", ""] + [f"- `{k.dataset}/{k.method}/{k.protocol}/{k.split}/seed{k.seed}` — "
                                               f"log: `{k.log_path(logs_root)}`" for k in failed_keys[:50]]
            if len(failed_keys) > 50:
                md.append(f"- ... and {len(failed_keys) - 50} more")
    write_bytes_atomic(out_md_p, ("\n".join(md).rstrip() + "\n").encode("utf-8"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml", help="the (effective) run config")
    p.add_argument("--results", default="data/results", help="root of the result JSONs")
    p.add_argument("--expected-file", help="text file with the planned result paths, one per line")
    p.add_argument("--out", default="reports/all.md")
    p.add_argument("--tables-dir", default="reports/tables")
    p.add_argument("--figures-dir", default="reports/figures")
    p.add_argument("--reference", default=REFERENCE_PATH, help="the papers' reported numbers")
    p.add_argument("--wall-time-s", type=float, default=None, help="total wall time measured by the caller")
    p.add_argument("--no-mask-figures", action="store_true", help="skip the SMA mask figures")


def main_from_args(a: argparse.Namespace) -> None:
    expected = read_expected(a.expected_file) if getattr(a, "expected_file", None) else None
    build_report(a.config, getattr(a, "results", "data/results"), a.out, getattr(a, "tables_dir", "reports/tables"),
                 getattr(a, "figures_dir", "reports/figures"), expected, getattr(a, "wall_time_s", None),
                 reference_path=getattr(a, "reference", REFERENCE_PATH),
                 mask_figures=not getattr(a, "no_mask_figures", False))
