"""The real Snakemake data rules on config/ci.yaml (fixture mirror cut from the real files)."""
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from .conftest import snakemake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_run(ci_workdir):
    r = snakemake(ci_workdir, "data")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return ci_workdir


def test_every_dataset_prepared_with_qc(data_run):
    reg = yaml.safe_load((data_run / "tests/fixtures/datasets.yaml").read_text())["datasets"]
    cfg = yaml.safe_load((data_run / "config/ci.yaml").read_text())
    used = {d["corpus"] for d in cfg["domains"].values()} | {t for d in cfg["domains"].values() for t in d["tasks"]}
    for ds in used:
        base = data_run / "data" / "processed" / ds
        qc = json.loads((base / "qc.json").read_text())
        tables = [base / "table.parquet"] if (base / "table.parquet").exists() else sorted((base / "shards").glob("*.parquet"))
        assert tables, ds
        df = pd.concat([pq.read_table(t).to_pandas() for t in tables])
        assert len(df) == qc["rows_out"] > 0, ds
        assert qc["rows_in"] == qc["rows_out"] + qc["rows_dropped"], ds
        assert df["id"].is_unique and {"id", "source_row"} <= set(df.columns), ds
        if reg[ds]["input"]["kind"] != "numeric":
            assert "tokens" in df.columns and (base / "vocab.json").exists(), ds
        else:
            assert (base / "standardize.json").exists(), ds


def test_invalid_smiles_dropped_and_reported(data_run):
    qc = json.loads((data_run / "data/processed/bbbp/qc.json").read_text())
    assert qc["rows_dropped"] >= 1
    assert all(isinstance(d["source_row"], int) and d["reason"] and d["file"] == "BBBP.csv" for d in qc["dropped"])


def test_splits_cover_rows_and_scaffolds_are_disjoint(data_run):
    base = data_run / "data/processed/bbbp"
    table = pq.read_table(base / "table.parquet").to_pandas()
    for name in ["scaffold", "scaffold_balanced_seed0", "scaffold_balanced_seed1"]:
        split = pq.read_table(base / "splits" / f"{name}.parquet").to_pandas()
        assert set(split["id"]) == set(table["id"])
        m = table.merge(split, on="id")
        folds_per_scaffold = m.groupby("scaffold")["fold"].nunique()
        assert (folds_per_scaffold == 1).all(), name
        assert set(m["fold"]) == {"train", "valid", "test"}


def test_second_run_does_nothing_and_a_deleted_file_rebuilds_only_its_dependents(data_run):
    r = snakemake(data_run, "data", "-n")
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)
    (data_run / "data/processed/esol/table.parquet").unlink()
    r = snakemake(data_run, "data", "-n", "--quiet", "rules")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "prepare_esol" in out and "split" in out
    for other in ["prepare_bbbp", "prepare_moses", "prepare_higgs", "download_esol"]:
        assert other not in out, other
    r = snakemake(data_run, "data")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (data_run / "data/processed/esol/table.parquet").exists()


def test_a_wrong_config_key_stops_the_run_naming_it(ci_workdir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains:\n  physics:\n    pretrain: {stepz: 3}\n")
    r = snakemake(ci_workdir, "data", "-n", configfiles=("config/ci.yaml", str(bad)))
    assert r.returncode != 0
    assert "domains.physics.pretrain: Additional properties are not allowed ('stepz'" in r.stdout + r.stderr
