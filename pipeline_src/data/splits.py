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
* ``scaffold_cv``: repeated scaffold-grouped K-fold cross-validation (Ash et al., JCIM 2025: 5 x 5).
  Per repeat ``r`` the Bemis–Murcko groups are shuffled by ``numpy.random.default_rng([0x5CAF, r])``,
  stably sorted by size (largest first, so that ties keep the shuffled order) and each given whole
  to the fold that holds the fewest molecules so far: K folds of near-equal size, no scaffold in two
  folds of a repeat. Split ``scaffold_cv_r<r>_f<k>`` tests on fold ``k``; from the other K − 1 folds
  whole scaffold groups, in an order shuffled by ``default_rng([0x5CAF, r, k])``, go to valid until it
  holds ``valid_fraction`` of all molecules (default 0.1); the rest is train.
* ``fixed``: the table's ``fold`` column (TAPE, HIGGS).
* ``column``: the same ``fold`` column, which prepare derived from a fold column of the source
  (registry ``split: {kind: column, ...}``: values mapped to train / valid / test, a valid flag or
  a seeded ``valid_fraction`` applied, rows with an unknown value dropped). Deterministic.

Split files: ``splits/<name>.parquet`` with columns ``id`` and ``fold`` (train | valid | test), in
table order; names from :func:`split_name`.
"""
from __future__ import annotations

import random as _random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from ..atomic import write_parquet_atomic
from .encode import table_files

SPLIT_KINDS = ("scaffold", "scaffold_balanced", "scaffold_cv", "random", "fixed", "column")
SCAFFOLD_KINDS = ("scaffold", "scaffold_balanced", "scaffold_cv")
DETERMINISTIC = ("scaffold", "fixed", "column")   # one split, no seed
FOLDS = ("train", "valid", "test")
SPLIT_SCHEMA = pa.schema([("id", pa.string()), ("fold", pa.string())])


class SplitError(ValueError):
    pass


@dataclass(frozen=True)
class SplitSpec:
    """What a split file name says: its kind, its seed (``scaffold_cv``: the repeat) and, for
    ``scaffold_cv``, the test fold."""
    kind: str
    seed: int = 0
    fold: int | None = None


_CV_NAME = re.compile(r"^scaffold_cv_r(\d+)_f(\d+)$")


def split_name(kind: str, seed: int | None = None, fold: int | None = None) -> str:
    """``scaffold``, ``fixed``, ``column``, ``scaffold_balanced_seed<k>``, ``random_seed<k>``, ``scaffold_cv_r<r>_f<k>``."""
    if kind in DETERMINISTIC:
        return kind
    if kind in ("scaffold_balanced", "random"):
        if seed is None:
            raise SplitError(f"split kind {kind!r} needs a seed")
        return f"{kind}_seed{int(seed)}"
    if kind == "scaffold_cv":
        if seed is None or fold is None:
            raise SplitError("split kind 'scaffold_cv' needs a repeat (seed) and a fold")
        return f"scaffold_cv_r{int(seed)}_f{int(fold)}"
    raise SplitError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")


def parse_split_name(name: str) -> SplitSpec:
    """The inverse of :func:`split_name`: ``scaffold_balanced_seed2`` -> ``SplitSpec("scaffold_balanced", 2)``,
    ``scaffold_cv_r1_f3`` -> ``SplitSpec("scaffold_cv", 1, 3)``; an unseeded kind gets seed 0."""
    m = _CV_NAME.match(name)
    if m:
        return SplitSpec("scaffold_cv", int(m.group(1)), int(m.group(2)))
    kind, sep, seed = name.rpartition("_seed")
    if not sep:
        kind, seed = name, "0"
    try:
        ok = kind != "scaffold_cv" and seed.isdigit() and split_name(kind, int(seed)) == name
    except SplitError:
        ok = False
    if not ok:
        raise SplitError(f"{name!r} is not a split name (scaffold, fixed, column, scaffold_balanced_seed<k>, random_seed<k>, "
                         "scaffold_cv_r<r>_f<k>)")
    return SplitSpec(kind, int(seed))


def split_kind_of(name: str) -> str:
    """The kind of a split name (the report's column): ``scaffold_cv_r0_f3`` -> ``scaffold_cv``."""
    return parse_split_name(name).kind


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


def scaffold_cv_fold_of_group(scaffolds: Sequence[str], repeat: int, folds: int) -> tuple[list[list[int]], np.ndarray]:
    """Scaffold groups and the CV fold (0..folds-1) of each, for one repeat."""
    if folds < 2:
        raise SplitError(f"scaffold_cv needs at least 2 folds, got {folds}")
    groups = list(scaffold_groups(scaffolds).values())
    if len(groups) < folds:
        raise SplitError(f"scaffold_cv: {len(groups)} scaffold groups cannot fill {folds} folds")
    order = np.random.default_rng([0x5CAF, int(repeat)]).permutation(len(groups))
    order = sorted(order.tolist(), key=lambda g: -len(groups[g]))   # stable: shuffled among equal sizes
    sizes = np.zeros(folds, dtype=np.int64)
    assign = np.empty(len(groups), dtype=np.int64)
    for g in order:
        k = int(np.argmin(sizes))                                     # the emptiest fold (lowest index on ties)
        assign[g] = k
        sizes[k] += len(groups[g])
    return groups, assign


def scaffold_cv_split_indices(scaffolds: Sequence[str], repeat: int, fold: int, folds: int = 5,
                              valid_fraction: float = 0.1) -> np.ndarray:
    """Fold index per row (0 train, 1 valid, 2 test) of split ``scaffold_cv_r<repeat>_f<fold>``."""
    if not 0 <= fold < folds:
        raise SplitError(f"scaffold_cv: fold {fold} outside 0..{folds - 1}")
    if not 0 < valid_fraction < 1:
        raise SplitError(f"scaffold_cv: valid_fraction must be in (0, 1), got {valid_fraction}")
    groups, assign = scaffold_cv_fold_of_group(scaffolds, repeat, folds)
    out = np.full(len(scaffolds), -1, dtype=np.int8)
    rest = [g for g in range(len(groups)) if assign[g] != fold]
    for g in range(len(groups)):
        if assign[g] == fold:
            out[groups[g]] = 2
    target = valid_fraction * len(scaffolds)
    n_valid = 0
    for i in np.random.default_rng([0x5CAF, int(repeat), int(fold)]).permutation(len(rest)):
        group = groups[rest[i]]
        if n_valid < target:
            out[group] = 1
            n_valid += len(group)
        else:
            out[group] = 0
    return out


def random_split_indices(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    f_train, f_valid, _ = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(f_train * n), int((f_train + f_valid) * n)
    fold = np.empty(n, dtype=np.int8)
    fold[perm[:a]], fold[perm[a:b]], fold[perm[b:]] = 0, 1, 2
    return fold


def make_split(table: pd.DataFrame, kind: str, seed: int, fractions=(0.8, 0.1, 0.1), *, fold: int | None = None,
               cv_folds: int = 5, valid_fraction: float = 0.1) -> pd.DataFrame:
    """``DataFrame[id, fold]`` (fold in train / valid / test), one row per table row, in order.
    ``scaffold_cv``: ``seed`` is the repeat, ``fold`` the test fold of ``cv_folds``."""
    if "id" not in table.columns:
        raise SplitError("the table has no 'id' column")
    if kind in SCAFFOLD_KINDS:
        if "scaffold" not in table.columns:
            raise SplitError(f"split {kind!r} needs a 'scaffold' column (chemistry tasks only)")
        scaffolds = table["scaffold"].astype(str).tolist()
        if kind == "scaffold":
            idx = scaffold_split_indices(scaffolds, fractions)
        elif kind == "scaffold_balanced":
            idx = balanced_scaffold_split_indices(scaffolds, seed, fractions)
        else:
            if fold is None:
                raise SplitError("split 'scaffold_cv' needs the test fold")
            idx = scaffold_cv_split_indices(scaffolds, seed, fold, cv_folds, valid_fraction)
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
                fractions: Sequence[float] = (0.8, 0.1, 0.1), *, fold: int | None = None, cv_folds: int = 5,
                valid_fraction: float = 0.1) -> Path:
    """Compute the split of a prepared dataset and write ``out_path`` (``id``, ``fold``) atomically."""
    cols = ["id"] + (["scaffold"] if kind in SCAFFOLD_KINDS else []) + (["fold"] if kind in ("fixed", "column") else [])
    try:
        table = read_table(processed_dir, cols)
    except (KeyError, pa.ArrowInvalid) as e:
        if kind in ("fixed", "column"):
            raise SplitError(f"{processed_dir}: split {kind!r} needs a 'fold' column in the table: the registry entry's "
                             f"split must be kind 'column' (folds from a column of the data) or 'fixed' (a fold per file)") from None
        raise SplitError(f"{processed_dir}: cannot read columns {cols} for split {kind!r}: {e}") from None
    split = make_split(table, kind, seed, tuple(fractions), fold=fold, cv_folds=cv_folds, valid_fraction=valid_fraction)
    out = pa.Table.from_arrays([pa.array(split["id"].tolist(), pa.string()), pa.array(split["fold"].tolist(), pa.string())],
                               schema=SPLIT_SCHEMA)
    return write_parquet_atomic(out, out_path)
