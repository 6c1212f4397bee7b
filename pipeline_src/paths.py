"""Where every output of a run lives, and how a path is read back (the ground floor: ``evaluate``
and ``report`` both import this, nothing here imports them).

- checkpoint: ``data/checkpoints/<corpus>/<method>/seed<k>/model.pt`` (+ ``log.jsonl``, ``last.pt``)
- features:   ``data/features/<dataset>/<method>/seed<k>.npz``
- result:     ``data/results/<dataset>/<method>/<protocol>/<split>/seed<k>.json``

``seed<k>`` of a result is the pretraining seed of the checkpoint it used (and the seed of the
probe, finetune or baseline run): an evaluation unit is (seed, split), and the same unit exists for
every method of a task, so methods are compared unit by unit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SEED_FILE = re.compile(r"^seed(\d+)\.json$")
_KIND_SUFFIX = re.compile(r"(_seed\d+|_r\d+_f\d+)$")
HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "spearman": True, "rmse": False}


def split_kind(split: str) -> str:
    """``scaffold_balanced_seed2`` -> ``scaffold_balanced``, ``scaffold_cv_r0_f3`` -> ``scaffold_cv``;
    unseeded names unchanged."""
    return _KIND_SUFFIX.sub("", split)


def checkpoint_dir(corpus: str, method: str, seed: int, root: str | Path = "data/checkpoints") -> str:
    return f"{Path(root).as_posix()}/{corpus}/{method}/seed{int(seed)}"


def checkpoint_path(corpus: str, method: str, seed: int, root: str | Path = "data/checkpoints") -> str:
    return f"{checkpoint_dir(corpus, method, seed, root)}/model.pt"


META_FILE = "meta.json"   # beside model.pt: its metadata as JSON
LOG_FILE = "log.jsonl"    # beside model.pt: one line per logged pretraining step


def meta_path(corpus: str, method: str, seed: int, root: str | Path = "data/checkpoints") -> str:
    """``model.pt``'s metadata as JSON (what the report reads of a pretraining run)."""
    return f"{checkpoint_dir(corpus, method, seed, root)}/{META_FILE}"


def log_path(corpus: str, method: str, seed: int, root: str | Path = "data/checkpoints") -> str:
    """The pretraining log of a checkpoint (the loss curve the report and DVC plots draw)."""
    return f"{checkpoint_dir(corpus, method, seed, root)}/{LOG_FILE}"


def masks_path(corpus: str, method: str, root: str | Path = "data/masks") -> str:
    """The mask draws of one (corpus, SMA-style method) for the report's mask figures."""
    return f"{Path(root).as_posix()}/{corpus}/{method}.json"


def features_path(dataset: str, method: str, seed: int, root: str | Path = "data/features") -> str:
    return f"{Path(root).as_posix()}/{dataset}/{method}/seed{int(seed)}.npz"


@dataclass(frozen=True)
class ResultKey:
    dataset: str
    method: str
    protocol: str
    split: str
    seed: int

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.method, self.protocol, split_kind(self.split))

    @property
    def unit(self) -> str:
        """The paired evaluation unit: the same string for every method of a task."""
        return f"seed{self.seed}/{self.split}"

    def path(self, results_root: str | Path = "data/results") -> str:
        return f"{Path(results_root).as_posix()}/{self.dataset}/{self.method}/{self.protocol}/{self.split}/seed{self.seed}.json"

    def log_path(self, logs_root: str | Path = "data/logs") -> str:
        """Where the evaluate rule writes this run's log: one job per (dataset, method, protocol)."""
        return (Path(logs_root) / "evaluate" / self.dataset / self.method / f"{self.protocol}.log").as_posix()


def parse_result_path(path: str | Path) -> ResultKey:
    """``.../<dataset>/<method>/<protocol>/<split>/seed<k>.json`` -> its key."""
    parts = Path(path).parts
    if len(parts) < 5:
        raise ValueError(f"{path}: not a result path (<dataset>/<method>/<protocol>/<split>/seed<k>.json)")
    m = _SEED_FILE.match(parts[-1])
    if not m:
        raise ValueError(f"{path}: the file name must be seed<k>.json")
    return ResultKey(parts[-5], parts[-4], parts[-3], parts[-2], int(m.group(1)))
