"""build_report end to end on tiny synthetic inputs; SMA mask draws (the masks step) on text and
numeric corpora; the report step reads files only (no torch, no model code)."""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline_src.batch import InputSpec
from pipeline_src.report.build import add_arguments, build_report, main_from_args
from pipeline_src.report.masks import masked_text, read_mask_draws
from pipeline_src.train.masks import write_masks
from test_report_support import (MODEL, REFERENCE, settings_hash_for, write_config, write_log, write_model,
                                 write_numeric_corpus, write_result, write_smiles_corpus)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """A working directory laid out like the repository's data/ after a partial run."""
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "run.yaml")
    res = Path("data/results")
    lin = {ds: settings_hash_for(tmp_path / "run.yaml", ds, "linear") for ds in ("bbbp", "esol")}
    for k, (v, w) in enumerate([(0.71, 0.66), (0.74, 0.70), (0.77, 0.71)]):
        write_result(res, "bbbp", "sma", "linear", f"scaffold_balanced_seed{k}", k, v, "roc_auc", lin["bbbp"],
                     n={"train": 80, "valid": 10, "test": 12, "train_pos": 40, "valid_pos": 5, "test_pos": 6})
        write_result(res, "bbbp", "random", "linear", f"scaffold_balanced_seed{k}", k, w, "roc_auc", lin["bbbp"],
                     n={"train": 80, "valid": 10, "test": 12, "train_pos": 40, "valid_pos": 5, "test_pos": 6})
    write_result(res, "bbbp", "sma", "linear", "scaffold", 0, 0.70, "roc_auc", lin["bbbp"])
    write_result(res, "esol", "sma", "linear", "scaffold", 0, 1.30, "rmse", lin["esol"])
    write_result(res, "esol", "rf_morgan", "classical", "scaffold", 0, 1.10, "rmse",
                 settings_hash_for(tmp_path / "run.yaml", "esol", "classical"))
    fail_log = Path("data/logs/evaluate/esol/random/linear.log")
    fail_log.parent.mkdir(parents=True)
    fail_log.write_text("RuntimeError: boom\n")
    spec = InputSpec("discrete", max_len=MODEL["max_len"])
    write_model(Path("data/checkpoints/moses/sma/seed0/model.pt"), "sma", spec, MODEL, {"mask_ratio": 0.3})
    write_model(Path("data/checkpoints/moses/span/seed0/model.pt"), "span", spec, MODEL, {"mask_ratio": 0.3})
    for method, name in (("sma", "SMA"), ("span", "span masking")):   # the method class's display_name
        meta = Path(f"data/checkpoints/moses/{method}/seed0/meta.json")
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "display_name": name}))
    write_log(Path("data/checkpoints/moses/sma/seed0/log.jsonl"), 20)
    write_log(Path("data/checkpoints/moses/random/seed0/log.jsonl"), 20, start=4.0)
    write_masks("data/checkpoints/moses/sma/seed0/model.pt", write_smiles_corpus(Path("data/processed/moses")),
                "moses", "data/masks/moses/sma.json")
    bench = Path("data/benchmarks/pretrain/moses/sma/seed0.tsv")
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                     "12.5\t0:00:12\t300.0\t900.0\t200.0\t250.0\t0.0\t1.0\t90.0\t11.0\n")
    return tmp_path


def _expected() -> list[str]:
    out = []
    for m in ("sma", "random", "span"):
        out += [f"data/results/bbbp/{m}/linear/scaffold_balanced_seed{k}/seed{k}.json" for k in range(3)]
        out += [f"data/results/{ds}/{m}/linear/scaffold/seed0.json" for ds in ("bbbp", "esol")]
    return out + ["data/results/esol/rf_morgan/classical/scaffold/seed0.json"]


def _table_cells(md: str) -> list[str]:
    cells = []
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells += [c.strip() for c in line.strip().strip("|").split(" | ")]
    return cells


def test_build_report_end_to_end(workdir: Path):
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), wall_time_s=42.0)
    md = Path("reports/all.md").read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "Findings"  # the report opens with the findings
    for h in ("MoleculeNet (SMA Table 2)", "our split: scaffold", "our split: scaffold_balanced",
              "Compute cost of pretraining", "How to read", "Figures", "Did pretraining learn?", "Fold sizes"):
        assert any(h in x for x in headings), h
    # paper tables of domains this run does not include are left out (no grid of "not run")
    for h in ("TAPE (SMA Table 1)", "HIGGS (SMA Table 3b)", "Linear evaluation (MetaMAE"):
        assert not any(h in x for x in headings), h
    # the headline tables open the findings, before the per-task prose
    assert md.index("### Headline") < md.index("### Protocol `linear`") < md.index("## How to read")
    # header
    assert "`run.yaml`" in md and "settings hash" in md and "MOSES" in md and "10 samples" in md
    assert "42 s" in md and "summed over 1 Snakemake jobs" in md and "at most 100" in md
    assert "torch " in md and "python " in md and "GPU:" in md
    assert "16 planned, 9 with a result, 1 failed (log present), 6 not run" in md
    # findings: SMA vs MAE (random) on bbbp, 3 paired units, named test
    assert re.search(r"bbbp: better \(Δ = \+0\.050, 95 % CI \[[^]]+\], n = 3 pretraining seeds \(one split each\); ", md), md
    # display names from meta.json; MAE and no pretraining without a checkpoint's meta.json by their fixed labels
    assert "- SMA vs MAE (random):" in md and "- span masking vs MAE (random): skipped, no results" in md
    # every method against no pretraining too: this run has no result for it, one line says so
    assert "**Every method against no pretraining**\n\n- skipped: no results for no pretraining in this protocol." in md
    # cells: aggregated, significantly best in bold, failed, not run, reported; never NaN or empty
    assert "**0.740 ± 0.030 (n=3)**" in md and "0.690 ± 0.026 (n=3)" in md
    assert "**0.690" not in md
    assert "failed (log: data/logs/evaluate/esol/random/linear.log)" in md
    assert "not run" in md and "| reported |" in md and "| ours |" in md
    assert "span masking (not domain-agnostic)" in md and "RF on Morgan FP" in md and "domain-specific baseline" in md
    # papers' settings beside ours
    assert "Reported rows' settings: pretrained on the GuacaMol training set" in md
    assert "Our settings: chemistry: pretrained on moses (10 samples)" in md
    # fold sizes with positives; diagnostic
    assert re.search(r"\| bbbp \| scaffold_balanced \| 3 \| 80 \(\+40\) \| 10 \(\+5\) \| 12 \(\+6\) \|", md)
    assert re.search(r"\| moses \| sma \| 0\.400 \(n=1\) \| 1\.000 \| 2\.500 \| 0\.960 \|", md)  # with the reference
    cells = _table_cells(md)
    assert cells and all(c and c.lower() != "nan" for c in cells)
    assert not re.search(r"\bnan\b", md, flags=re.IGNORECASE)
    # no absolute path of this machine
    assert str(workdir) not in md and "/tmp/" not in md
    # CSV copies
    tables = sorted(p.name for p in Path("reports/tables").glob("*.csv"))
    assert tables == sorted(["moleculenet_scaffold.csv", "moleculenet_scaffold_balanced.csv", "compute_cost.csv",
                             "comparisons.csv", "headline.csv", "variance_components.csv", "power.csv"])
    cost = Path("reports/tables/compute_cost.csv").read_text()
    assert "moses,sma,0,20,12.5,3.5,1234.0,50.0,300.0,1.25,2.5,0.5,1.0,0.4" in cost
    # figures exist and are linked relative to the report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(x).name for x in links} >= {"loss_moses.png", "tasks_linear.png", "mask_moses_sma.png"}
    for x in links:
        assert not Path(x).is_absolute() and (Path("reports") / x).stat().st_size > 1000
    # SMILES with masked characters as text
    m = re.search(r"sample 0  input : (\S+)\n\s+draw 1: (\S+)\n\s+draw 2: (\S+)", md)
    assert m and m.group(1) == "CCO" and len(m.group(2)) == 3 and "_" in m.group(2)
    assert not list(Path("reports").rglob(".*tmp*"))


CV_EXPECTED = [f"data/results/bbbp/{m}/linear/scaffold_cv_r0_f{f}/seed{k}.json"
               for m in ("sma", "random", "span") for k in range(3) for f in range(5)]


def test_report_verdicts_rest_on_seeds_and_the_headline_matches_comparisons(workdir: Path):
    """Five folds per pretraining seed with a checkpoint effect: the fold-unit Tukey HSD calls SMA
    better, the seeds do not support it; the report's verdict, statement and bold follow the seeds,
    comparisons.csv keeps the fold rows without a verdict, and the headline table is comparisons.csv's."""
    h = settings_hash_for(workdir / "run.yaml", "bbbp", "linear")
    rng = np.random.default_rng(4)
    fold = rng.normal(0, 0.05, 5)
    offset = {"random": [0.0, 0.0, 0.0], "sma": [0.03, -0.01, 0.02], "span": [0.0, 0.01, -0.01]}
    for m, off in offset.items():
        for k in range(3):
            for f in range(5):
                write_result(Path("data/results"), "bbbp", m, "linear", f"scaffold_cv_r0_f{f}", k,
                             0.7 + fold[f] + off[k] + rng.normal(0, 0.001), "roc_auc", h)
    build_report("run.yaml", expected=_expected() + CV_EXPECTED, reference_path=str(REFERENCE), mask_figures=False)
    md = Path("reports/all.md").read_text()
    comp = list(csv.DictReader(open("reports/tables/comparisons.csv")))
    bbbp = [r for r in comp if r["dataset"] == "bbbp" and r["protocol"] == "linear"]
    assert {r["unit"] for r in bbbp} == {"pretraining seed", "fold (conditional on these checkpoints)"}
    for r in comp:                                      # a verdict never rests on fold units
        if r["verdict"]:
            assert r["unit"] == "pretraining seed" and r["n"] == r["n_seeds"]
        else:
            assert r["unit"].startswith("fold")
    seed = {(r["method"], r["reference"]): r for r in bbbp if r["unit"] == "pretraining seed"}
    fold_rows = {(r["method"], r["reference"]): r for r in bbbp if r["unit"].startswith("fold")}
    assert fold_rows[("sma", "random")]["tukey_reject"] == "True" and fold_rows[("sma", "random")]["n"] == "15"
    assert seed[("sma", "random")]["verdict"] == "no significant difference" and seed[("sma", "random")]["n"] == "3"
    assert re.search(r"  - bbbp: no significant difference \(Δ = [^)]*n = 3 pretraining seeds, each the mean of its "
                     r"5 splits; Tukey HSD over 3 methods on the seed means", md)
    assert "n = 15" not in md.split("## How to read")[0]
    # the headline table: the design-aware rows of comparisons.csv, in the CSV and in the text
    head = list(csv.DictReader(open("reports/tables/headline.csv")))
    assert head and {r["reference"] for r in head} == {"random"}   # no "none" results in this run
    for r in head:
        c = seed[(r["method"], r["reference"])] if r["dataset"] == "bbbp" else next(
            x for x in comp if (x["dataset"], x["method"], x["reference"], x["unit"]) ==
            (r["dataset"], r["method"], r["reference"], "pretraining seed"))
        assert float(r["delta"]) == pytest.approx(float(c["delta"]))
        assert (r["low"], r["high"], r["verdict"]) == (c["verdict_low"], c["verdict_high"], c["verdict"])
        assert r["cell"] in md
    table = md.split("**Protocol `linear`, against MAE (random)**")[1].split("\n\n")[1]
    row = next(line for line in table.splitlines() if line.startswith("| SMA |"))
    want = next(r["cell"] for r in head if r["method"] == "sma" and r["dataset"] == "bbbp")
    assert want in row and "▲" not in want
    # where the variance lives, how many seeds a claim needs
    var = [r for r in csv.DictReader(open("reports/tables/variance_components.csv")) if r["dataset"] == "bbbp"]
    v = next(r for r in var if r["method"] == "sma" and r["reference"] == "random")
    assert (v["n_seeds"], v["n_splits"]) == ("3", "5") and float(v["share_seed"]) > 0.9
    assert float(v["design_effect"]) > 4
    pw = next(r for r in csv.DictReader(open("reports/tables/power.csv"))
              if (r["dataset"], r["method"], r["reference"]) == ("bbbp", "sma", "random"))
    assert pw["sd_source"] == "variance components" and float(pw["mdd_10_seeds"]) < float(pw["mdd_run_seeds"])
    assert "### Where the variance lives" in md and "### How many seeds a claim needs" in md
    assert "| linear | bbbp | SMA | 3 × 5 |" in md


def test_report_refuses_stale_results(workdir: Path):
    """A result computed under other evaluation settings stops the report, naming the file and the
    command that rebuilds it; after the rebuild (here: the right hash) the report is written."""
    from pipeline_src.report.build import StaleResultsError

    stale = write_result(Path("data/results"), "esol", "sma", "linear", "scaffold", 0, 1.3, "rmse", "0123456789abcdef")
    with pytest.raises(StaleResultsError, match=r"data/results/esol/sma/linear/scaffold/seed0\.json.*"
                                                 r"snakemake --cores 2 --forcerun evaluate_linear_esol"):
        build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    assert not Path("reports/all.md").exists()
    write_result(Path("data/results"), "esol", "sma", "linear", "scaffold", 0, 1.3, "rmse",
                 settings_hash_for(workdir / "run.yaml", "esol", "linear"))
    assert stale.exists()
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    assert Path("reports/all.md").exists()


def test_build_report_with_nothing_run(workdir: Path):
    import shutil

    shutil.rmtree("data")
    main_from_args(argparse.Namespace(config="run.yaml", results="data/results", expected_file=None,
                                      out="out/all.md", tables_dir="out/tables", figures_dir="out/figures",
                                      reference=str(REFERENCE), wall_time_s=None, no_mask_figures=False))
    md = Path("out/all.md").read_text()
    assert "no loss figure" in md and "no results yet" in md and "no figure" in md
    cells = _table_cells(md)
    assert cells and all(c for c in cells) and not re.search(r"\bnan\b", md, flags=re.IGNORECASE)


def test_cli_arguments_parse():
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--config", "c.yaml", "--expected-file", "e.txt", "--out", "r/all.md", "--wall-time-s", "3"])
    assert a.config == "c.yaml" and a.expected_file == "e.txt" and a.wall_time_s == 3.0 and a.tables_dir


def sma_masks(model: Path, processed: Path, corpus: str, n_samples: int):
    """The masks step's file, read back as the report reads it."""
    out = model.parent / "masks.json"
    write_masks(model, processed, corpus, out, n_samples=n_samples)
    return read_mask_draws(out)


def test_sma_masks_two_draws_on_smiles_and_numeric(tmp_path: Path):
    spec = InputSpec("discrete", max_len=MODEL["max_len"])
    model = write_model(tmp_path / "sma" / "model.pt", "sma", spec, MODEL, {"mask_ratio": 0.4, "num_per_query": 2})
    d = sma_masks(model, write_smiles_corpus(tmp_path / "moses"), "moses", n_samples=8)
    assert d.masks.shape[:2] == (2, 8) and d.labels[0] == list("CCO")
    for b in range(8):
        n = int(d.lengths[b])
        k = max(1, min(n - 1, int(np.floor(n * 0.4 + 0.5))))
        assert (d.masks[:, b, :n].sum(1) == k).all() and not d.masks[:, b, n:].any()
    assert masked_text(list("CCO"), np.array([False, True, False])) == "C_O"

    nspec = InputSpec("continuous", max_len=5, d_raw=1)
    nmodel = write_model(tmp_path / "hsma" / "model.pt", "sma", nspec, {**MODEL, "max_len": 5}, {"mask_ratio": 0.4})
    h = sma_masks(nmodel, write_numeric_corpus(tmp_path / "higgs"), "higgs", n_samples=6)
    assert h.kind == "continuous" and h.feature_names[0] == "f_pt" and h.labels[0][0] == "f_pt"
    assert (h.masks.sum(2) == 2).all()


REPORT_ONLY = """
import sys
from pipeline_src.report.build import build_report
build_report("run.yaml", reference_path=sys.argv[1], wall_time_s=1.0)
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(
    ("pipeline_src.train", "pipeline_src.methods", "pipeline_src.models", "pipeline_src.evaluate", "pipeline_src.data")))
print("HEAVY", heavy)
"""


def test_report_reads_files_only(workdir: Path):
    """The whole report (mask figures included) runs without torch or any model, training,
    evaluation or data-preparation module: it reads result, meta.json and mask files."""
    r = subprocess.run([sys.executable, "-c", REPORT_ONLY, str(REFERENCE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HEAVY []" in r.stdout, r.stdout[-2000:]
    md = Path("reports/all.md").read_text()
    assert "mask_moses_sma.png" in md and "not domain-agnostic" in md


def test_settings_lines_name_a_methods_own_model():
    from pipeline_src.report.build import _own_models

    d = {"model": {"arch": "perceiver", "dim": 512, "depth": 16, "heads": 8, "max_len": 1024},
         "pretrain": {"steps": 3235, "batch_size": 256, "lr": 1e-4, "weight_decay": 0.01},
         "pretrain_by_method": {"metamae": {"steps": 100000, "batch_size": 128, "weight_decay": 1e-4}},
         "model_by_method": {"metamae": {"arch": "transformer", "dim": 256, "pos_embedding": "sincos"}}}
    assert _own_models(d) == ("; metamae: its own model, transformer dim 256, depth 16, heads 8, sincos positions, "
                              "100000 steps × batch 128, lr 0.0001, weight decay 0.0001")
    assert _own_models({k: v for k, v in d.items() if k != "model_by_method"}) == ""
