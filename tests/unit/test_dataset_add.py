"""`python -m pipeline_src dataset add`: inferred layout, validated entry appended (or printed), and
the entry it writes downloads and prepares; bad inputs leave the registry as it was."""
from __future__ import annotations

import re
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

import byod_files as bf
from pipeline_src.cli import main
from pipeline_src.config import load_registry
from pipeline_src.data.download import fetch_dataset
from pipeline_src.data.prepare import prepare_dataset


@pytest.fixture
def setup(tmp_path):
    mirror = tmp_path / "mirror"
    reg = tmp_path / "datasets.yaml"
    shutil.copy(bf.FIXTURES / "datasets.yaml", reg)
    mol = bf.molecules(60)
    mol["set"] = mol["fold"].map({"train": "TR", "valid": "VA", "test": "TE"})
    data = bf.csv_bytes(mol[["smiles", "p_np", "heavy", "set"]], sep=";")
    path, member = bf.write_source(data, "tox.csv", "zip", mirror / "lab" / "tox")
    return mirror, reg, path, member, mol


def add(*args: str) -> list[str]:
    return ["dataset", "add", *args]


def base_args(mirror, reg, path, member, name="mytox"):
    return add(name, "--file", str(path), "--member", member, "--mirror", str(mirror), "--domain", "chemistry",
               "--input-column", "smiles", "--kind", "smiles", "--labels", "p_np", "heavy", "--task", "binary",
               "--split", "column", "--fold-column", "set", "--fold-values", "train=TR,valid=VA,test=TE",
               "--registry", str(reg))


def test_round_trip_entry_downloads_and_prepares(setup, tmp_path, capsys):
    mirror, reg, path, member, mol = setup
    before = reg.read_text()
    assert main(base_args(mirror, reg, path, member)) == 0
    out = capsys.readouterr().out
    assert "separator ';'" in out and "preview" in out and "folds: {'train': 42, 'valid': 6, 'test': 12}" in out
    after = reg.read_text()
    assert after.startswith(before)                    # appended; comments and other entries untouched
    entry = load_registry(reg)["mytox"]
    f = entry["files"][0]
    assert f == {"name": "bundle.zip", "mirror_path": "lab/tox/bundle.zip", "sha256": bf.sha256(path),
                 "urls": [], "member": "bundle/tox.csv", "sep": ";"}
    assert entry["split"] == {"kind": "column", "column": "set",
                              "values": {"train": "TR", "valid": "VA", "test": "TE"}, "fractions": [0.8, 0.1, 0.1]}
    assert entry["metric"] == "roc_auc" and entry["labels"] == ["p_np", "heavy"]
    # the entry alone: download from the mirror, prepare
    raw = tmp_path / "data/raw/mytox"
    fetch_dataset("mytox", entry, raw, [mirror])
    qc = prepare_dataset("mytox", entry, raw, tmp_path / "data/processed/mytox")
    assert qc["rows_out"] == 60 and qc["folds"] == {"train": 42, "valid": 6, "test": 12}
    t = pq.read_table(tmp_path / "data/processed/mytox/table.parquet").to_pandas()
    assert t["heavy"].tolist() == mol["heavy"].astype(float).tolist()
    # a second add of the same name is refused, the registry unchanged
    assert main(base_args(mirror, reg, path, member)) == 2
    assert "already there" in capsys.readouterr().err and reg.read_text() == after


def test_dry_run_prints_and_writes_nothing(setup, capsys):
    mirror, reg, path, member, _ = setup
    before = reg.read_bytes()
    assert main([*base_args(mirror, reg, path, member), "--dry-run"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out.split("(not written, --dry-run):\n", 1)[1])
    assert printed["mytox"]["files"][0]["member"] == "bundle/tox.csv"
    assert reg.read_bytes() == before


def test_headerless_tsv_in_tar_and_valid_fraction(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    reg = tmp_path / "datasets.yaml"
    shutil.copy(bf.FIXTURES / "datasets.yaml", reg)
    sol = bf.solubility(50)
    sol["set"] = [1 if f == "test" else 0 for f in sol["fold"]]
    path, member = bf.write_source(bf.csv_bytes(sol[["smiles", "solubility", "set"]], sep="\t", header=False),
                                   "esol.tsv", "tar.gz", mirror)
    args = add("esolish", "--file", str(path), "--member", member, "--mirror", str(mirror), "--domain", "chemistry",
               "--input-column", "col1", "--kind", "smiles", "--labels", "col2", "--task", "regression",
               "--split", "column", "--fold-column", "col3", "--fold-values", "train=0,test=1",
               "--valid-fraction", "0.2", "--seed", "5", "--registry", str(reg))
    assert main(args) == 0, capsys.readouterr().err
    entry = load_registry(reg)["esolish"]
    assert entry["format"] == "tsv" and entry["files"][0]["header"] is False and "sep" not in entry["files"][0]
    assert entry["split"]["valid_fraction"] == 0.2 and entry["split"]["seed"] == 5 and entry["metric"] == "rmse"


def test_sdf_and_fasta_entries(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    reg = tmp_path / "datasets.yaml"
    shutil.copy(bf.FIXTURES / "datasets.yaml", reg)
    mol = bf.molecules(30)
    sdf, _ = bf.write_source(bf.sdf_bytes(mol["smiles"].tolist(), {"p_np": mol["p_np"].tolist(),
                                                                    "set": mol["fold"].tolist()}), "m.sdf", "gz", mirror)
    assert main(add("mysdf", "--file", str(sdf), "--mirror", str(mirror), "--domain", "chemistry", "--kind", "smiles",
                    "--labels", "p_np", "--task", "binary", "--split", "column", "--fold-column", "set",
                    "--registry", str(reg))) == 0, capsys.readouterr().err
    assert load_registry(reg)["mysdf"]["input"] == {"kind": "smiles"}
    seq = bf.sequences(30)
    fa, _ = bf.write_source(bf.fasta_bytes([f"{i}|{f}|{y}" for i, f, y in zip(seq["id"], seq["fold"], seq["stability"])],
                                           seq["seq"].tolist()), "s.fasta", "plain", mirror)
    pattern = r"^[^|]+\|(?P<fold>\w+)\|(?P<stability>\S+)"
    assert main(add("myfasta", "--file", str(fa), "--mirror", str(mirror), "--domain", "proteins", "--kind", "protein",
                    "--labels", "stability", "--task", "regression", "--metric", "spearman", "--split", "column",
                    "--fold-column", "fold", "--label-pattern", pattern, "--registry", str(reg))) == 0, \
        capsys.readouterr().err
    e = load_registry(reg)["myfasta"]
    assert e["fasta"]["label_pattern"] == pattern and e["format"] == "fasta"


@pytest.mark.parametrize("change,match", [
    (lambda a: a[:a.index("--labels") + 1] + ["p_np", "toxic"] + a[a.index("--task"):],
     r"bundle.zip \[member bundle/tox.csv\]: missing column\(s\) \['toxic'\]"),
    (lambda a: [x if x != "train=TR,valid=VA,test=TE" else "train=TR,valid=VA" for x in a],
     r"bundle.zip \[member bundle/tox.csv\]: row 8, column 'set': fold value 'TE' is not one of \['TR', 'VA'\] "
     r"\(12 row\(s\).*--drop-unknown-folds"),
    (lambda a: [x if x != "bundle/tox.csv" else "bundle/toxic.csv" for x in a],
     r"bundle.zip: no member 'bundle/toxic.csv'; the archive holds \['bundle/README.txt', 'bundle/tox.csv'\]"),
])
def test_bad_inputs_give_one_error_and_leave_the_registry(setup, capsys, change, match):
    mirror, reg, path, member, _ = setup
    before = reg.read_bytes()
    args = change(base_args(mirror, reg, path, member))
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dataset add: error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert reg.read_bytes() == before


def test_unknown_fold_values_can_be_dropped_on_purpose(setup, capsys):
    mirror, reg, path, member, _ = setup
    args = [x if x != "train=TR,valid=VA,test=TE" else "train=TR,valid=VA" for x in base_args(mirror, reg, path, member)]
    assert main([*args, "--drop-unknown-folds", "--dry-run"]) == 2     # no test rows left: still an error
    assert "no rows in fold(s) ['test']" in capsys.readouterr().err
    args = [x if x != "train=TR,valid=VA,test=TE" else "train=TR|VA,test=TE" for x in base_args(mirror, reg, path, member)]
    assert main([*args, "--valid-fraction", "0.1"]) == 0, capsys.readouterr().err


def test_file_outside_the_mirror(setup, tmp_path, capsys):
    mirror, reg, path, member, _ = setup
    other = tmp_path / "elsewhere"
    other.mkdir()
    args = base_args(other, reg, path, member)
    assert main(args) == 2
    assert "not inside the mirror directory" in capsys.readouterr().err


@pytest.mark.parametrize("sep", [",", "\t", ";", "|", "whitespace"])
def test_separator_and_header_inferred(sep):
    from pipeline_src.data.add import _first_records, infer_header, infer_separator

    mol = bf.molecules(20)
    real = " " if sep == "whitespace" else sep
    text = "\n".join(real.join(r) for r in [["smiles", "p_np"], *mol[["smiles", "p_np"]].astype(str).values.tolist()])
    assert infer_separator(text, "f") == sep
    assert infer_header(_first_records(text, sep, 1)[0], ["smiles", "p_np"], "f") is True
    assert infer_header(_first_records(text, sep, 1)[0], ["col1", "col2"], "f") is False


def test_fixed_split_from_one_file_per_fold(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    reg = tmp_path / "datasets.yaml"
    shutil.copy(bf.FIXTURES / "datasets.yaml", reg)
    seq = bf.sequences()
    files = []
    for fold in ("train", "test"):
        part = seq[seq["fold"] != "test"] if fold == "train" else seq[seq["fold"] == "test"]
        p, _ = bf.write_source(bf.csv_bytes(part[["seq", "stability"]], sep="|"), f"{fold}.csv", "gz", mirror)
        files += ["--file", str(p), "--file-fold", fold]
    args = add("stab2", *files, "--mirror", str(mirror), "--domain", "proteins", "--input-column", "seq",
               "--kind", "protein", "--labels", "stability", "--task", "regression", "--metric", "spearman",
               "--split", "fixed", "--valid-fraction", "0.1", "--registry", str(reg))
    assert main(args) == 0, capsys.readouterr().err
    assert "folds: {'train': 101, 'valid': 11, 'test': 28}" in capsys.readouterr().out
    e = load_registry(reg)["stab2"]
    assert [(f["name"], f["fold"], f["sep"]) for f in e["files"]] == [("train.csv.gz", "train", "|"), ("test.csv.gz", "test", "|")]
    assert e["split"]["kind"] == "fixed" and e["split"]["valid_fraction"] == 0.1
    # a file without its fold is refused before anything is written
    before = reg.read_bytes()
    last = len(args) - 1 - args[::-1].index("--file-fold")
    args = [a if a != "stab2" else "stab3" for a in args]
    assert main(args[:last] + args[last + 2:]) == 2
    assert "one --file-fold" in capsys.readouterr().err and reg.read_bytes() == before
