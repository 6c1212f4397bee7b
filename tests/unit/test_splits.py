"""Splits: DeepChem scaffold split (against an independent reference), chemprop balanced
scaffold split, random, fixed, and the split files."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_src.data import splits
from pipeline_src.data.prepare import prepare_dataset

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MIRROR = FIXTURES / "mirror"
REGISTRY = yaml.safe_load((FIXTURES / "datasets.yaml").read_text())["datasets"]
CHEM_TASKS = ["esol", "freesolv", "lipo", "bbbp", "bace", "hiv"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("splits")
    out = {}
    for name in CHEM_TASKS + ["stability", "higgs"]:
        raw = root / "raw" / name
        raw.mkdir(parents=True)
        for f in REGISTRY[name]["files"]:
            shutil.copy(MIRROR / f["mirror_path"], raw / f["name"])
        prepare_dataset(name, REGISTRY[name], raw, root / "processed" / name)
        out[name] = root / "processed" / name
    return out


def table(path: Path) -> pd.DataFrame:
    return pq.read_table(path / "table.parquet").to_pandas()


def reference_deepchem(scaffolds: list[str], frac_train=0.8, frac_valid=0.1) -> list[str]:
    """DeepChem ScaffoldSplitter, written from its definition:

    1. group the row positions by scaffold (each group's positions ascending);
    2. order the groups by size, largest first; between two groups of equal size, the one whose
       smallest position is larger comes first (DeepChem sorts on (size, first position) and
       reverses the whole order);
    3. walk the groups; a group goes to train if train would then hold at most frac_train * n
       rows, otherwise to valid if train + valid would then hold at most
       (frac_train + frac_valid) * n rows, otherwise to test.
    """
    n = len(scaffolds)
    members: dict[str, list[int]] = {}
    for pos in range(n):
        members.setdefault(scaffolds[pos], [])
        members[scaffolds[pos]].append(pos)
    groups = list(members.values())

    def before(a: list[int], b: list[int]) -> int:
        if len(a) != len(b):
            return -1 if len(a) > len(b) else 1
        return -1 if min(a) > min(b) else (1 if min(a) < min(b) else 0)

    groups.sort(key=functools.cmp_to_key(before))
    fold = [""] * n
    n_train = n_valid = 0
    for g in groups:
        if n_train + len(g) <= frac_train * n:
            where = "train"
            n_train += len(g)
        elif n_train + n_valid + len(g) <= (frac_train + frac_valid) * n:
            where = "valid"
            n_valid += len(g)
        else:
            where = "test"
        for pos in g:
            fold[pos] = where
    return fold


def assert_disjoint_scaffolds(scaffolds, folds):
    seen: dict[str, str] = {}
    for s, f in zip(scaffolds, folds):
        assert seen.setdefault(s, f) == f, f"scaffold {s!r} in {seen[s]} and {f}"


@pytest.mark.parametrize("name", CHEM_TASKS)
def test_scaffold_split_matches_reference_and_properties(prepared, name):
    t = table(prepared[name])
    sp = splits.make_split(t, "scaffold", seed=0)
    assert sp["id"].tolist() == t["id"].tolist()
    assert sp["fold"].tolist() == reference_deepchem(t["scaffold"].tolist())
    assert_disjoint_scaffolds(t["scaffold"], sp["fold"])
    n = len(t)
    counts = sp["fold"].value_counts()
    assert counts["train"] <= 0.8 * n and counts["train"] + counts.get("valid", 0) <= 0.9 * n
    assert counts["train"] >= 0.7 * n
    # deterministic; the seed is ignored
    assert splits.make_split(t, "scaffold", seed=7).equals(sp)


def test_scaffold_split_tie_order_is_deepchems():
    # groups: big (rows 0-3), a (4, 5), b (6, 7), c (8), d (9); n = 10, cutoffs 8 and 9
    # DeepChem order: big, b, a, d, c  ->  d fits in valid, c goes to test
    scaff = ["big"] * 4 + ["a", "a", "b", "b", "c", "d"]
    fold = splits.make_split(pd.DataFrame({"id": [str(i) for i in range(10)], "scaffold": scaff}),
                             "scaffold", 0)["fold"].tolist()
    assert fold == ["train"] * 8 + ["test", "valid"]
    assert splits.deepchem_scaffold_sets(scaff) == [[0, 1, 2, 3], [6, 7], [4, 5], [9], [8]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=120),
       st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.25, 0.25)]))
def test_scaffold_split_random_inputs(ints, fractions):
    scaff = [f"s{i}" for i in ints]
    idx = splits.scaffold_split_indices(scaff, fractions)
    folds = [splits.FOLDS[i] for i in idx]
    assert folds == reference_deepchem(scaff, fractions[0], fractions[1])
    assert_disjoint_scaffolds(scaff, folds)


def test_balanced_scaffold_split_seeds(prepared):
    t = table(prepared["hiv"])
    a = splits.make_split(t, "scaffold_balanced", seed=0)
    b = splits.make_split(t, "scaffold_balanced", seed=1)
    assert not a["fold"].equals(b["fold"])
    assert splits.make_split(t, "scaffold_balanced", seed=0).equals(a)
    n = len(t)
    for sp in (a, b):
        assert_disjoint_scaffolds(t["scaffold"], sp["fold"])
        c = sp["fold"].value_counts()
        assert c["train"] <= 0.8 * n and c.get("valid", 0) <= 0.1 * n
        assert set(sp["fold"]) == {"train", "valid", "test"}


def test_balanced_scaffold_split_big_sets_first():
    # one scaffold with 30 of 100 rows is bigger than half the valid/test size: it goes first,
    # so it always lands in train whatever the seed
    scaff = ["big"] * 30 + [f"s{i}" for i in range(70)]
    df = pd.DataFrame({"id": [str(i) for i in range(100)], "scaffold": scaff})
    for seed in range(5):
        sp = splits.make_split(df, "scaffold_balanced", seed)
        assert (sp["fold"][:30] == "train").all()
        assert sp["fold"].value_counts().to_dict() == {"train": 80, "valid": 10, "test": 10}


def test_random_split(prepared):
    t = table(prepared["esol"])
    a = splits.make_split(t, "random", 0)
    assert a.equals(splits.make_split(t, "random", 0))
    assert not a.equals(splits.make_split(t, "random", 1))
    n = len(t)
    c = a["fold"].value_counts()
    assert c["train"] == int(0.8 * n) and c["valid"] == int(0.9 * n) - int(0.8 * n)


def test_fixed_split_uses_fold_column(prepared):
    for name in ("stability", "higgs"):
        t = table(prepared[name])
        sp = splits.make_split(t, "fixed", 0)
        assert sp["fold"].tolist() == t["fold"].tolist()
    with pytest.raises(splits.SplitError, match="fold"):
        splits.make_split(table(prepared["esol"]), "fixed", 0)
    with pytest.raises(splits.SplitError, match="scaffold"):
        splits.make_split(table(prepared["stability"]), "scaffold", 0)


def test_split_names_and_write_split(prepared, tmp_path):
    assert splits.split_name("scaffold") == "scaffold"
    assert splits.split_name("fixed", 3) == "fixed"
    assert splits.split_name("scaffold_balanced", 2) == "scaffold_balanced_seed2"
    assert splits.split_name("random", 0) == "random_seed0"
    with pytest.raises(splits.SplitError):
        splits.split_name("bogus", 0)
    d = prepared["bbbp"]
    out = tmp_path / "splits" / "scaffold_balanced_seed1.parquet"
    splits.write_split(d, "scaffold_balanced", 1, out)
    got = pq.read_table(out)
    assert got.column_names == ["id", "fold"]
    assert got.to_pandas().equals(splits.make_split(table(d), "scaffold_balanced", 1))
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left
    splits.write_split(prepared["higgs"], "fixed", 0, tmp_path / "splits" / "fixed.parquet")
    assert pq.read_table(tmp_path / "splits" / "fixed.parquet").num_rows == len(table(prepared["higgs"]))


def test_parse_split_name_inverts_split_name():
    for kind, seed in [("scaffold", 0), ("fixed", 0), ("scaffold_balanced", 2), ("random", 11)]:
        assert splits.parse_split_name(splits.split_name(kind, seed)) == splits.SplitSpec(kind, seed)
    assert splits.parse_split_name(splits.split_name("scaffold_cv", 3, 4)) == splits.SplitSpec("scaffold_cv", 3, 4)
    assert splits.split_name("scaffold_cv", 1, 2) == "scaffold_cv_r1_f2"
    for bad in ["bogus", "scaffold_seed1", "random", "random_seedx", "scaffold_balanced_seed-1", "",
                "scaffold_cv", "scaffold_cv_seed1", "scaffold_cv_r1", "scaffold_cv_r1_fx"]:
        with pytest.raises(splits.SplitError, match="not a split name"):
            splits.parse_split_name(bad)


def test_split_command_writes_every_named_split(prepared, tmp_path):
    """One `split` call writes all of a task's splits, each named by its file."""
    from pipeline_src.cli import main

    d = prepared["bbbp"]
    outs = [tmp_path / "s" / f"{n}.parquet" for n in ("scaffold", "scaffold_balanced_seed0", "scaffold_balanced_seed1")]
    assert main(["split", "--registry", "config/datasets.yaml", "--dataset", "bbbp", "--processed", str(d),
                 "--out", *map(str, outs)]) == 0
    assert pq.read_table(outs[0]).to_pandas().equals(splits.make_split(table(d), "scaffold", 0))
    assert pq.read_table(outs[2]).to_pandas().equals(splits.make_split(table(d), "scaffold_balanced", 1))
    assert not pq.read_table(outs[1]).to_pandas().equals(pq.read_table(outs[2]).to_pandas())
    bad = tmp_path / "s" / "scaffold_seed3.parquet"
    assert main(["split", "--registry", "config/datasets.yaml", "--dataset", "bbbp", "--processed", str(d),
                 "--out", str(bad)]) == 2
    assert not bad.exists()


def test_evaluate_command_writes_one_result_per_out(prepared, tmp_path):
    """One `evaluate` call runs every (split, seed) its --out paths name; each result equals the
    same run made alone; a path that names no split and seed is refused before any work."""
    import json

    from pipeline_src.cli import main

    d = prepared["bbbp"]
    for name in ("scaffold", "scaffold_balanced_seed1"):
        spec = splits.parse_split_name(name)
        splits.write_split(d, spec.kind, spec.seed, d / "splits" / f"{name}.parquet")
    common = ["evaluate", "--config", "config/ci.yaml", "--dataset", "bbbp", "--method", "rf_morgan",
              "--protocol", "classical", "--processed", str(d), "--threads", "1"]
    both = [tmp_path / "both" / "scaffold" / "seed0.json", tmp_path / "both" / "scaffold_balanced_seed1" / "seed1.json"]
    assert main([*common, "--out", *map(str, both)]) == 0
    alone = tmp_path / "alone" / "scaffold_balanced_seed1" / "seed1.json"
    assert main([*common, "--out", str(alone)]) == 0
    a, b = (json.loads(p.read_text()) for p in both)
    assert (a["split"], a["seed"], b["split"], b["seed"]) == ("scaffold", 0, "scaffold_balanced_seed1", 1)
    assert a["test"] != b["test"]  # two different splits were evaluated
    c = json.loads(alone.read_text())
    assert (b["test"], b["valid"], b["n"]) == (c["test"], c["valid"], c["n"])
    bad = tmp_path / "bad" / "scaffold" / "run0.json"
    assert main([*common, "--out", str(both[0]), str(bad)]) == 2
    assert not bad.exists()


# --- repeated scaffold cross-validation --------------------------------------------------------

def _cv_scaffolds(n_groups: int = 60, seed: int = 0) -> list[str]:
    """Scaffold labels with groups of very different sizes (a few big ones, many singletons)."""
    rng = np.random.default_rng(seed)
    sizes = [40, 25, 12] + rng.integers(1, 6, size=n_groups - 3).tolist()
    out = [f"S{g}" for g, k in enumerate(sizes) for _ in range(k)]
    return [out[i] for i in rng.permutation(len(out))]


def test_scaffold_cv_folds_partition_by_scaffold_with_near_equal_sizes():
    scaf = _cv_scaffolds()
    n, folds = len(scaf), 5
    for repeat in range(3):
        groups, assign = splits.scaffold_cv_fold_of_group(scaf, repeat, folds)
        test_of = np.full(n, -1)
        for k in range(folds):
            idx = splits.scaffold_cv_split_indices(scaf, repeat, k, folds, valid_fraction=0.1)
            assert set(np.unique(idx)) == {0, 1, 2}
            test_of[idx == 2] = k
            # no scaffold in two parts of one split
            for part_a, part_b in [(0, 1), (0, 2), (1, 2)]:
                sa = {scaf[i] for i in np.flatnonzero(idx == part_a)}
                sb = {scaf[i] for i in np.flatnonzero(idx == part_b)}
                assert not sa & sb
            assert abs((idx == 1).sum() - 0.1 * n) <= max(len(g) for g in groups)
        # every molecule is tested exactly once per repeat, and no scaffold in two test folds
        assert (test_of >= 0).all()
        for g in groups:
            assert len(set(test_of[g])) == 1
        sizes = np.bincount(test_of, minlength=folds)
        assert sizes.max() - sizes.min() <= max(len(g) for g in groups)  # greedy: within one group of equal
        assert sizes.min() > 0


def test_scaffold_cv_repeats_differ_and_are_reproducible():
    scaf = _cv_scaffolds()
    a = splits.scaffold_cv_split_indices(scaf, 0, 1)
    assert np.array_equal(a, splits.scaffold_cv_split_indices(scaf, 0, 1))
    assert not np.array_equal(a, splits.scaffold_cv_split_indices(scaf, 1, 1))


def test_scaffold_cv_refuses_bad_settings():
    scaf = _cv_scaffolds()
    with pytest.raises(splits.SplitError, match="fold 5 outside"):
        splits.scaffold_cv_split_indices(scaf, 0, 5, folds=5)
    with pytest.raises(splits.SplitError, match="scaffold groups cannot fill"):
        splits.scaffold_cv_split_indices(["a", "a", "b"], 0, 0, folds=5)


def test_scaffold_cv_split_files_on_real_molecules(prepared, tmp_path):
    """Written through the split command: every molecule of BBBP is in exactly one test fold of a
    repeat, and no scaffold of the table is split across folds."""
    from pipeline_src.cli import main

    d = prepared["bbbp"]
    outs = [tmp_path / f"scaffold_cv_r0_f{k}.parquet" for k in range(3)]
    assert main(["split", "--registry", "config/datasets.yaml", "--dataset", "bbbp", "--processed", str(d),
                 "--cv-folds", "3", "--out", *map(str, outs)]) == 0
    t = table(d).set_index("id")
    tested = []
    for o in outs:
        s = pq.read_table(o).to_pandas()
        assert set(s["fold"]) == {"train", "valid", "test"}
        tested += s.loc[s["fold"] == "test", "id"].tolist()
        by_fold = s.assign(scaffold=t.loc[s["id"], "scaffold"].to_numpy()).groupby("scaffold")["fold"].nunique()
        assert (by_fold == 1).all()
    assert sorted(tested) == sorted(t.index.tolist())
