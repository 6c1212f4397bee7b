"""Train / valid / test splits of a prepared table (DESIGN §6).

* ``scaffold``: DeepChem's ``ScaffoldSplitter`` — molecules grouped by Bemis–Murcko scaffold
  (without chirality, the table's ``scaffold`` column); the groups (index lists, ascending)
  ordered by ``(len(group), group[0])`` descending — biggest first, and among groups of the
  same size the one whose first molecule comes *later* first — then put whole into train while
  ``len(train) + len(group) <= 0.8 n``, else into valid while
  ``len(train) + len(valid) + len(group) <= 0.9 n``, else into test. Deterministic; the seed is
  ignored.
* ``scaffold_balanced``: chemprop's balanced scaffold split — groups bigger than half the valid
  or half the test size first, the rest after, each part shuffled by ``random.Random(seed)``;
  then train while ``len(train) + len(group) <= 0.8 n``, else valid while
  ``len(valid) + len(group) <= 0.1 n``, else test. One split per seed.
* ``random``: a seeded permutation cut at ``int(0.8 n)`` and ``int(0.9 n)``.
* ``fixed``: the table's ``fold`` column (TAPE, HIGGS).
* ``column``: the same ``fold`` column, which prepare derived from a fold column of the source
  (registry ``split: {kind: column, ...}``: values mapped to train / valid / test, a valid flag or
  a seeded ``valid_fraction`` applied, rows with an unknown value dropped). Deterministic.

Split files: ``splits/<name>.parquet`` with columns ``id`` and ``fold`` (train | valid | test), in
table order; names from :func:`split_name`.
"""
from __future__ import annotations

import random as _random
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .atomic import write_parquet_atomic
from .encode import table_files

SPLIT_KINDS = ("scaffold", "scaffold_balanced", "random", "fixed", "column")
DETERMINISTIC = ("scaffold", "fixed", "column")   # one split, no seed
FOLDS = ("train", "valid", "test")
SPLIT_SCHEMA = pa.schema([("id", pa.string()), ("fold", pa.string())])


class SplitError(ValueError):
    pass


def split_name(kind: str, seed: int | None = None) -> str:
    """``scaffold``, ``fixed``, ``column``, ``scaffold_balanced_seed<k>``, ``random_seed<k>``."""
    if kind in DETERMINISTIC:
        return kind
    if kind in ("scaffold_balanced", "random"):
        if seed is None:
            raise SplitError(f"split kind {kind!r} needs a seed")
        return f"{kind}_seed{int(seed)}"
    raise SplitError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")


def parse_split_name(name: str) -> tuple[str, int]:
    """The inverse of :func:`split_name`: ``scaffold_balanced_seed2`` -> ``("scaffold_balanced", 2)``;
    an unseeded kind gets seed 0."""
    kind, sep, seed = name.rpartition("_seed")
    if not sep:
        kind, seed = name, "0"
    try:
        ok = seed.isdigit() and split_name(kind, int(seed)) == name
    except SplitError:
        ok = False
    if not ok:
        raise SplitError(f"{name!r} is not a split name (scaffold, fixed, column, scaffold_balanced_seed<k>, random_seed<k>)")
    return kind, int(seed)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise SplitError(f"fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def scaffold_groups(scaffolds: Sequence[str]) -> dict[str, list[int]]:
    """Scaffold -> ascending row positions, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(scaffolds):
        groups.setdefault(s, []).append(i)
    return groups


def deepchem_scaffold_sets(scaffolds: Sequence[str]) -> list[list[int]]:
    """The scaffold sets in DeepChem's order: sorted by ``(size, first index)``, reversed."""
    groups = scaffold_groups(scaffolds)
    return [g for _, g in sorted(groups.items(), key=lambda kv: (len(kv[1]), kv[1][0]), reverse=True)]


def scaffold_split_indices(scaffolds: Sequence[str], fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Fold index (0 train, 1 valid, 2 test) per row, DeepChem ScaffoldSplitter."""
    f_train, f_valid, _ = _check_fractions(fractions)
    n = len(scaffolds)
    train_cutoff = f_train * n
    valid_cutoff = (f_train + f_valid) * n
    fold = np.full(n, -1, dtype=np.int8)
    n_train = n_valid = 0
    for group in deepchem_scaffold_sets(scaffolds):
        k = len(group)
        if n_train + k > train_cutoff:
            if n_train + n_valid + k > valid_cutoff:
                fold[group] = 2
            else:
                fold[group] = 1
                n_valid += k
        else:
            fold[group] = 0
            n_train += k
    return fold


def balanced_scaffold_split_indices(scaffolds: Sequence[str], seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Fold index per row, chemprop's balanced scaffold split for ``seed``."""
    f_train, f_valid, f_test = _check_fractions(fractions)
    n = len(scaffolds)
    train_size, valid_size, test_size = f_train * n, f_valid * n, f_test * n
    big, small = [], []
    for group in scaffold_groups(scaffolds).values():
        (big if len(group) > valid_size / 2 or len(group) > test_size / 2 else small).append(group)
    rng = _random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    fold = np.full(n, -1, dtype=np.int8)
    n_train = n_valid = 0
    for group in big + small:
        k = len(group)
        if n_train + k <= train_size:
            fold[group] = 0
            n_train += k
        elif n_valid + k <= valid_size:
            fold[group] = 1
            n_valid += k
        else:
            fold[group] = 2
    return fold


def random_split_indices(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    f_train, f_valid, _ = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(f_train * n), int((f_train + f_valid) * n)
    fold = np.empty(n, dtype=np.int8)
    fold[perm[:a]], fold[perm[a:b]], fold[perm[b:]] = 0, 1, 2
    return fold


def make_split(table: pd.DataFrame, kind: str, seed: int, fractions=(0.8, 0.1, 0.1)) -> pd.DataFrame:
    """``DataFrame[id, fold]`` (fold in train / valid / test), one row per table row, in order."""
    if "id" not in table.columns:
        raise SplitError("the table has no 'id' column")
    if kind in ("scaffold", "scaffold_balanced"):
        if "scaffold" not in table.columns:
            raise SplitError(f"split {kind!r} needs a 'scaffold' column (chemistry tasks only)")
        scaffolds = table["scaffold"].astype(str).tolist()
        idx = (scaffold_split_indices(scaffolds, fractions) if kind == "scaffold"
               else balanced_scaffold_split_indices(scaffolds, seed, fractions))
        fold = np.asarray(FOLDS, dtype=object)[idx]
    elif kind == "random":
        fold = np.asarray(FOLDS, dtype=object)[random_split_indices(len(table), seed, fractions)]
    elif kind in ("fixed", "column"):
        if "fold" not in table.columns:
            raise SplitError(f"split {kind!r} needs a 'fold' column in the table: the registry entry's split must be "
                             f"kind 'column' (folds from a column of the data) or 'fixed' (a fold per file)")
        fold = table["fold"].astype(str).to_numpy(dtype=object)
        bad = sorted(set(fold.tolist()) - set(FOLDS))
        if bad:
            raise SplitError(f"fold column has values outside {FOLDS}: {bad}")
    else:
        raise SplitError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")
    return pd.DataFrame({"id": table["id"].astype(str).to_numpy(), "fold": pd.array(fold, dtype="str")})


def read_table(processed_dir: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    files = table_files(processed_dir)
    t = pa.concat_tables([pq.read_table(f, columns=list(columns)) for f in files])
    return t.to_pandas()


def write_split(processed_dir: str | Path, kind: str, seed: int, out_path: str | Path,
                fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Path:
    """Compute the split of a prepared dataset and write ``out_path`` (``id``, ``fold``) atomically."""
    cols = ["id"] + (["scaffold"] if kind in ("scaffold", "scaffold_balanced") else []) + (["fold"] if kind in ("fixed", "column") else [])
    try:
        table = read_table(processed_dir, cols)
    except (KeyError, pa.ArrowInvalid) as e:
        if kind in ("fixed", "column"):
            raise SplitError(f"{processed_dir}: split {kind!r} needs a 'fold' column in the table: the registry entry's "
                             f"split must be kind 'column' (folds from a column of the data) or 'fixed' (a fold per file)") from None
        raise SplitError(f"{processed_dir}: cannot read columns {cols} for split {kind!r}: {e}") from None
    split = make_split(table, kind, seed, tuple(fractions))
    out = pa.Table.from_arrays([pa.array(split["id"].tolist(), pa.string()), pa.array(split["fold"].tolist(), pa.string())],
                               schema=SPLIT_SCHEMA)
    return write_parquet_atomic(out, out_path)
