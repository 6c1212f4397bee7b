"""Bring your own dataset: one dataset per registry format, each added by a registry entry alone
(one by `dataset add`), named in a domain's tasks, runs download -> prepare -> split (column) ->
linear evaluation of `none` and `random` -> report, in one snakemake run at the CI model sizes."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

import byod_files as bf

from .conftest import copy_workflow, snakemake

pytestmark = pytest.mark.integration

CHEMISTRY = ["byod_csv", "byod_parquet", "byod_sdf"]
PROTEINS = ["byod_fasta"]
NUMERIC = ["byod_numeric"]
TASKS = [*CHEMISTRY, *PROTEINS, *NUMERIC]

# layered over config/ci.yaml: its model sizes and corpora, only the new tasks, two methods
CONFIG = """\
registry: byod/datasets.yaml
data:
  mirrors: ["tests/fixtures/mirror", "byod/mirror"]
methods_run: [none, random]
seeds: [0]
pretrain_seeds: [0]
evaluate: {protocols: [linear], baselines: false}
domains:
  chemistry:
    tasks: [byod_csv, byod_parquet, byod_sdf]
    splits: [column]
  proteins:
    tasks: [byod_fasta]
    splits: [column]
  physics:                      # a numeric task is its own pretraining corpus (as HIGGS is)
    corpus: byod_numeric
    tasks: [byod_numeric]
    splits: [column]
    model: {arch: transformer, dim: 32, depth: 2, heads: 2, mlp_ratio: 2, max_len: 8, decoder_dim: 32, decoder_heads: 2}
"""


def _entry(fmt, kind, labels, task, metric, split, files, column=None, **extra):
    inp = {"kind": kind, **({"column": column} if column else {})}
    return {"title": f"own {fmt}", "domain": "x", "role": "task", "format": fmt, "input": inp, "labels": labels,
            "task": task, "metric": metric, "split": split, "files": files, **extra}


def write_sources(wd):
    """The source files under byod/mirror and their registry entries (all but byod_csv)."""
    m = wd / "byod" / "mirror"
    entries = {}
    # Parquet, FLIP style: set = train / test plus a validation flag; two rows with an unknown set
    mol = bf.molecules()
    mol["set"] = ["test" if f == "test" else "train" for f in mol["fold"]]
    mol["validation"] = [f == "valid" for f in mol["fold"]]
    mol.loc[[4, 40], "set"] = "excluded"
    p, _ = bf.write_source(bf.parquet_bytes(mol[["smiles", "p_np", "set", "validation"]]), "flip.parquet", "plain",
                           m / "parquet")
    entries["byod_parquet"] = _entry("parquet", "smiles", ["p_np"], "binary", "roc_auc",
                                     {"kind": "column", "column": "set", "valid_column": "validation"},
                                     [bf.file_entry(p, m)], column="smiles")
    # SDF, a member of a tar.gz: the molecule block is the input, label and fold are data items
    # (TDC-style fold ids 0 / 1), valid rows carved from train (seeded)
    sol = bf.solubility()
    p, mem = bf.write_source(bf.sdf_bytes(sol["smiles"].tolist(), {"logS": sol["solubility"].tolist(),
                                                                   "split": [int(f == "test") for f in sol["fold"]]}),
                             "esol.sdf", "tar.gz", m / "sdf")
    entries["byod_sdf"] = _entry("sdf", "smiles", ["logS"], "regression", "rmse",
                                 {"kind": "column", "column": "split", "values": {"train": 0, "test": 1},
                                  "valid_fraction": 0.15}, [bf.file_entry(p, m, mem)])
    # FASTA, gzip: the fold parsed from the header, the label joined from a CSV by id
    seq = bf.sequences()
    heads = [f"{i} some protein fold={f}" for i, f in zip(seq["id"], seq["fold"])]
    p, _ = bf.write_source(bf.fasta_bytes(heads, seq["seq"].tolist()), "stab.fasta", "gz", m / "fasta")
    lab, _ = bf.write_source(bf.csv_bytes(seq[["id", "stability"]]), "labels.csv", "plain", m / "fasta")
    entries["byod_fasta"] = _entry("fasta", "protein", ["stability"], "regression", "spearman",
                                   {"kind": "column", "column": "fold"}, [bf.file_entry(p, m), bf.file_entry(lab, m)],
                                   fasta={"label_pattern": r"fold=(?P<fold>\w+)", "labels_file": "labels.csv"})
    # numeric features (real HIGGS rows), Parquet in a zip
    num = bf.higgs_features(8)
    p, mem = bf.write_source(bf.parquet_bytes(num), "higgs8.parquet", "zip", m / "numeric")
    entries["byod_numeric"] = {**_entry("parquet", "numeric", ["signal"], "binary", "accuracy",
                                        {"kind": "column", "column": "fold"}, [bf.file_entry(p, m, mem)]),
                               "input": {"kind": "numeric", "columns": [f"x{j}" for j in range(1, 9)]}}
    # CSV with semicolons in a zip, three label columns with missing labels: written by `dataset add`
    tox = bf.with_missing(bf.molecules(), {"heavy": (3, 0), "aromatic_n": (4, 1)})
    tox["set"] = tox["fold"].map({"train": "TR", "valid": "VA", "test": "TE"})
    p, mem = bf.write_source(bf.csv_bytes(tox[["smiles", "p_np", "heavy", "aromatic_n", "set"]], sep=";"),
                             "tox.csv", "zip", m / "csv")
    return entries, (p, mem)


@pytest.fixture(scope="module")
def byod_run(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("byod_run"))
    entries, (csv_path, member) = write_sources(wd)
    reg = yaml.safe_load((wd / "tests/fixtures/datasets.yaml").read_text())
    reg["datasets"] = {k: v for k, v in reg["datasets"].items() if k in ("moses", "uniprot")}
    reg["datasets"].update(entries)
    (wd / "byod/datasets.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    (wd / "byod/config.yaml").write_text(CONFIG)
    r = subprocess.run([sys.executable, "-m", "pipeline_src", "dataset", "add", "byod_csv", "--file",
                        str(csv_path.relative_to(wd)), "--member", member, "--mirror", "byod/mirror",
                        "--domain", "chemistry", "--input-column", "smiles", "--kind", "smiles",
                        "--labels", "p_np", "heavy", "aromatic_n", "--task", "binary", "--split", "column",
                        "--fold-column", "set", "--fold-values", "train=TR,valid=VA,test=TE",
                        "--registry", "byod/datasets.yaml"], cwd=wd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = snakemake(wd, configfiles=("config/ci.yaml", "byod/config.yaml"), timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return wd


def test_every_format_prepared_split_by_its_column(byod_run):
    for ds in TASKS:
        base = byod_run / "data/processed" / ds
        qc = json.loads((base / "qc.json").read_text())
        table = pq.read_table(base / "table.parquet").to_pandas()
        split = pq.read_table(base / "splits/column.parquet").to_pandas()
        assert len(table) == qc["rows_out"] > 50, ds
        assert split["id"].tolist() == table["id"].tolist() and split["fold"].tolist() == table["fold"].tolist(), ds
        assert all(qc["folds"][f] > 0 for f in ("train", "valid", "test")), ds
    qc = json.loads((byod_run / "data/processed/byod_parquet/qc.json").read_text())
    assert qc["drop_reasons"] == {"unknown fold value": 2} and qc["split"]["unknown_values"] == {"excluded": 2}
    qc = json.loads((byod_run / "data/processed/byod_csv/qc.json").read_text())
    assert qc["labels"]["heavy"]["missing"] > 0 and qc["labels"]["aromatic_n"]["missing"] > 0


def test_none_and_random_results_for_every_task(byod_run):
    for ds in TASKS:
        for method in ("none", "random"):
            r = json.loads((byod_run / f"data/results/{ds}/{method}/linear/column/seed0.json").read_text())
            assert math.isfinite(r["test"]) and math.isfinite(r["valid"]), (ds, method)
            assert len(r["checkpoint_sha256"]) == 64
    multi = json.loads((byod_run / "data/results/byod_csv/random/linear/column/seed0.json").read_text())
    assert list(multi["tasks"]) == ["p_np", "heavy", "aromatic_n"]
    scored = [t["test"] for t in multi["tasks"].values() if "test" in t]
    assert multi["test"] == pytest.approx(sum(scored) / len(scored))


def test_report_has_a_row_per_method_and_a_cell_per_new_task(byod_run):
    md = (byod_run / "reports/all.md").read_text()
    table = md[md.index("split column"):]
    for ds in TASKS:
        assert ds in table, ds
    rows = [ln for ln in table.splitlines() if re.match(r"^\|\s*(no pretraining|MAE \(random\)) \|", ln)]
    assert len(rows) >= 2
    for row in rows[:2]:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert sum(bool(re.match(r"-?\d", c.replace("**", ""))) for c in cells) >= len(TASKS), row
