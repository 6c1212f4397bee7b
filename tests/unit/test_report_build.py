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
import yaml

from pipeline_src.batch import InputSpec
from pipeline_src.report.build import add_arguments, build_report, main_from_args
from pipeline_src.report.masks import masked_text, read_mask_draws
from pipeline_src.train.masks import write_masks
from test_report_support import (MODEL, PRETRAIN, REFERENCE, ROOT, settings_hash_for, write_config, write_log, write_model,
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
    assert re.search(r"\| moses \| sma \| 0\.400 \(n=1\) \|.*\| n/a \|$", md, re.M)  # no own adaptation
    assert ("**How every method is scored**: the same fixed random masks for every method; the encoder reads the "
            "visible tokens and the decoder predicts the masked ones in one forward pass, with no step") in md
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
# the method registry (entry-point names, no method class) is read when settings are resolved
light = {"pipeline_src.methods", "pipeline_src.methods.registry"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or (m not in light and m.startswith(
    ("pipeline_src.train", "pipeline_src.methods", "pipeline_src.models", "pipeline_src.evaluate", "pipeline_src.data"))))
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


def _meta_line(method: str, meta: dict) -> str:
    """What a checkpoint's meta.json says of its model and recipe, in the report's words."""
    m, t = meta["model_cfg"], meta["train_cfg"]
    return (f"{method}: its own settings, {m['arch']} dim {m['dim']}, depth {m['depth']}, heads {m['heads']}, "
            f"{m.get('pos_embedding', 'learned')} positions, max length {m['max_len']}; {t['steps']:,} steps × batch "
            f"{t['batch_size']}, lr {t['lr']}, weight decay {t['weight_decay']}, warm-up {t['warmup_steps']} steps")


def test_settings_lines_state_what_each_checkpoint_ran(tmp_path: Path, monkeypatch):
    """A method's own model and recipe, given in two config files (the override nested inside
    model_by_method / pretrain_by_method): the report's settings lines state exactly what each
    checkpoint's meta.json records, for a method with its own model and one with only its own recipe."""
    from pipeline_src.config import load_config
    from pipeline_src.report.build import _our_settings
    from pipeline_src.spec import resolve_pretrain
    from pipeline_src.train.pretrain import run_pretrain

    monkeypatch.chdir(tmp_path)
    methods = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]
    write_config(tmp_path / "run.yaml", methods_run=["none", "random", "metamae"],
                 methods={k: methods[k] for k in ("none", "random", "metamae")},
                 domains={"chemistry": {"corpus": "moses", "corpus_subsample": 10, "tasks": ["esol"], "splits": ["scaffold"],
                                        "model": MODEL, "pretrain": {**PRETRAIN, "steps": 2},
                                        "model_by_method": {"metamae": {"dim": 24, "pos_embedding": "sincos"}},
                                        "pretrain_by_method": {"metamae": {"batch_size": 3, "weight_decay": 1.0e-4}}}})
    Path("over.yaml").write_text(yaml.safe_dump({"domains": {"chemistry": {
        "model_by_method": {"metamae": {"depth": 2}},
        "pretrain_by_method": {"metamae": {"steps": 3}, "random": {"lr": 5.0e-4, "warmup_steps": 1}}}}}))
    cfg = load_config("run.yaml", ["over.yaml"])      # as Snakemake merges --configfile files
    Path("effective.yaml").write_text(yaml.safe_dump(cfg))
    processed = write_smiles_corpus(tmp_path / "processed" / "moses")
    lines = {}
    for method in ("random", "metamae"):
        out = tmp_path / "ckpt" / method
        run_pretrain(resolve_pretrain(cfg, "moses", method), str(processed), str(out), seed=0, threads=1)
        meta = json.loads((out / "meta.json").read_text())
        lines[method] = _meta_line(method, meta)
    meta = json.loads((tmp_path / "ckpt" / "metamae" / "meta.json").read_text())
    assert meta["model_cfg"]["dim"] == 24 and meta["model_cfg"]["depth"] == 2 and meta["train_cfg"]["steps"] == 3
    ours = _our_settings(cfg, ["esol"])
    for method, line in lines.items():
        assert line in ours, (line, ours)
    build_report("effective.yaml", results_root="none", reference_path=str(REFERENCE), mask_figures=False)
    md = Path("reports/all.md").read_text()
    for line in lines.values():
        assert line in md



@pytest.mark.parametrize("content", [None, "datasets: {}\n", "datasets: [unclosed\n", "datasets:\n  bbbp: {domain: 3}\n"])
def test_report_stops_when_the_registry_does_not_load(workdir: Path, content):
    """A registry that is missing, empty, not YAML or invalid stops the report with an error naming
    the file; no report is written."""
    from pipeline_src.config import ConfigError

    reg = workdir / "broken_registry.yaml"
    if content is not None:
        reg.write_text(content)
    write_config(workdir / "run.yaml", registry=str(reg))
    with pytest.raises(ConfigError, match=re.escape(str(reg))):
        build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    assert not Path("reports/all.md").exists()


def _probe(converged: bool, n_iter: int) -> dict:
    return {"solver": "lbfgs", "max_iter": 500, "tol": 1e-4, "n_iter": n_iter, "converged": converged,
            "chosen_converged": converged, "grid": []}


def test_report_marks_probes_that_did_not_converge(workdir: Path):
    """A linear result whose solver did not converge is named in its table's note and under the
    Findings heading (a verdict on that pair rests on it); converged ones are counted."""
    from pipeline_src.report.aggregate import load_results
    from pipeline_src.report.build import unconverged_probes

    res = Path("data/results")
    lin = settings_hash_for(workdir / "run.yaml", "bbbp", "linear")
    n = {"train": 80, "valid": 10, "test": 12, "train_pos": 40, "valid_pos": 5, "test_pos": 6}
    for k, (v, w) in enumerate([(0.71, 0.66), (0.74, 0.70), (0.77, 0.71)]):
        write_result(res, "bbbp", "sma", "linear", f"scaffold_balanced_seed{k}", k, v, "roc_auc", lin, n=n,
                     probe=_probe(k != 1, 500 if k == 1 else 40))
        write_result(res, "bbbp", "random", "linear", f"scaffold_balanced_seed{k}", k, w, "roc_auc", lin, n=n,
                     probe=_probe(True, 30 + k))
    assert unconverged_probes(load_results(res)) == {("bbbp", "sma", "linear"): (1, 3)}
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    md = Path("reports/all.md").read_text()
    assert "Linear probes that did not converge (max_iter reached or a solver warning): bbbp / sma (linear): 1 of 3" in md
    assert "rests on a probe that did not converge; the other 5 converged, at most 500 iterations of max_iter 500" in md
    findings = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "**Not converged**: the linear probes of bbbp / sma (linear) did not all converge" in findings
    # results written before the record: said so, no claim either way
    for k in range(3):
        write_result(res, "bbbp", "sma", "linear", f"scaffold_balanced_seed{k}", k, 0.7, "roc_auc", lin, n=n)
        write_result(res, "bbbp", "random", "linear", f"scaffold_balanced_seed{k}", k, 0.7, "roc_auc", lin, n=n)
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    md = Path("reports/all.md").read_text()
    assert "Not converged" not in md and "convergence is not recorded in these results" in md


def test_findings_say_where_methods_had_different_settings(workdir: Path):
    """Methods pretrained on different widths, steps or optimizer settings: the Findings say so,
    naming each method's resolved settings; one shared recipe: nothing said."""
    from pipeline_src.config import load_config
    from pipeline_src.report.build import comparability_notes

    chem = {"corpus": "moses", "corpus_subsample": 10, "tasks": ["esol", "bbbp"], "splits": ["scaffold"],
            "model": MODEL, "pretrain": PRETRAIN}
    write_config(workdir / "same.yaml", domains={"chemistry": chem})
    assert comparability_notes(load_config("same.yaml")) == []
    write_config(workdir / "meta.yaml", domains={"chemistry": chem}, methods_run=["none", "random", "metamae"],
                 methods={"none": {}, "random": {"mask_ratio": 0.3}, "metamae": {}})
    assert [n for n in comparability_notes(load_config("meta.yaml")) if n] == [
        n for n in comparability_notes(load_config("meta.yaml")) if "docs/metamae_vs_paper.md" in n]
    write_config(workdir / "run.yaml", domains={"chemistry": {
        **chem, "model_by_method": {"span": {"dim": 24}},
        "pretrain_by_method": {"span": {"steps": 50, "weight_decay": 1.0e-4}, "sma": {"lr": 3.0e-4}}}})
    notes = comparability_notes(load_config("run.yaml"))
    assert len(notes) == 2 and notes[0].startswith("**Settings differ between methods** in chemistry: ")
    assert "span with its own model (transformer dim 24 × 1 layers" in notes[0]
    assert "its own recipe (50 steps × batch 8, AdamW lr 0.001, weight decay 0.0001" in notes[0]
    assert "sma with its own recipe (20 steps × batch 8, AdamW lr 0.0003, weight decay 0.01" in notes[0]
    assert "; random with transformer dim 16 × 1 layers" in notes[0]
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE), mask_figures=False)
    findings = Path("reports/all.md").read_text().split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert notes[0] in findings


def _diversity(entropy: float, identical: float, verdict: str, reasons: list[str]) -> dict:
    return {"unit": "token_value", "samples": 10, "step": 20,
            "method": {"entropy": entropy, "position_entropy": 0.9, "value_entropy": entropy, "jaccard": 0.93,
                       "identical_share": identical, "distinct_share": 1.0, "mask_ratio": 0.3},
            "random": {"entropy": 0.98, "position_entropy": 0.99, "value_entropy": 0.98, "jaccard": 0.17,
                       "identical_share": 0.0, "distinct_share": 1.0, "mask_ratio": 0.3},
            "entropy_ratio": entropy / 0.98, "verdict": verdict, "reasons": reasons,
            "thresholds": {"min_entropy_ratio": 0.8, "max_excess_identical_share": 0.25, "min_count": 20}}


def test_report_shows_mask_diversity_verdicts_and_bag_of_tokens_per_run(workdir: Path):
    import json

    sma_meta = Path("data/checkpoints/moses/sma/seed0/meta.json")
    meta = json.loads(sma_meta.read_text())
    meta["mask_diversity"] = _diversity(0.55, 0.61, "collapsed", ["61% of the samples get the same mask twice "
                                                                  "(random masking: 0%)"])
    sma_meta.write_text(json.dumps(meta))
    rnd = Path("data/checkpoints/moses/random/seed1/meta.json")
    rnd.parent.mkdir(parents=True, exist_ok=True)
    rnd.write_text(json.dumps({**meta, "method": "random", "seed": 1, "mask_diversity": _diversity(0.97, 0.0, "fine", []),
                               "diagnostic": {**meta["diagnostic"], "ratio": 0.97, "reference_ratio": 0.96}}))
    none = Path("data/checkpoints/moses/none/seed0/meta.json")
    none.parent.mkdir(parents=True, exist_ok=True)
    none.write_text(json.dumps({**meta, "method": "none", "steps": 0, "mask_diversity": None,
                                "diagnostic": {"heldout_loss": None, "baseline": 2.5, "ratio": None}}))
    build_report("run.yaml", expected=_expected(), reference_path=str(REFERENCE))
    md = Path("reports/all.md").read_text()
    section = md.split("## Did pretraining learn?")[1].split("\n## ")[0]
    assert "### Mask diversity" in section
    assert "| moses | sma | 0 | 0.400 | 0.55 (0.98) | 0.56 | 0.93 (0.17) | 0.61 (0.00) | 1.00 | **collapsed** |" in section
    assert "| moses | random | 1 | 0.970 | 0.97 (0.98) | 0.99 | 0.93 (0.17) | 0.00 (0.00) | 1.00 | fine |" in section
    assert "| moses | none | 0 | n/a | n/a (no masks) |" in section
    assert "**Masks collapsed: `sma` on moses** (seed 0 of 1; 61% of the samples get the same mask twice" in section
    assert "a finding about the method at this run's scale and settings" in section
    findings = md.split("## Findings")[1].split("\n## ")[0]
    assert "**Masks collapsed: `sma` on moses** in 1 of 1 pretraining seeds" in findings
    assert "`random` on moses**" not in findings
    # the order-free reference: a sentence for the run at or above it, none for the one below it
    assert "**moses / `random`: no more than a bag of its tokens** (seed 1 of 1: held-out ratio 0.970 ≥ 0.960" in section
    assert "moses / `sma`: no more than a bag" not in section
    # beside the mask figure
    figs = md.split("### SMA masks")[1]
    assert ("Mask diversity at the end of pretraining (held-out slice; \"Did pretraining learn?\"): seed 0: entropy 0.55 "
            "(random 0.98), Jaccard 0.93 (0.17), identical pairs 0.61, collapsed.") in figs
    cost = Path("reports/tables/compute_cost.csv").read_text().splitlines()
    assert "mask_verdict" in cost[0] and any(",collapsed," in line for line in cost)
    assert not re.search(r"\bnan\b", md, flags=re.IGNORECASE)
