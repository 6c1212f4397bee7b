"""scripts/composition_bound.py: the order-free reference of the pretraining diagnostic, by hand."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "composition_bound.py"


def _load():
    spec = importlib.util.spec_from_file_location("composition_bound", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["composition_bound"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mean_nll_by_hand() -> None:
    cb = _load()
    p = np.full(cb.VOCAB, 1e-9)
    p[[2, 3]] = 0.5
    p /= p.sum()
    first = np.full(cb.VOCAB, 1e-9)
    first[5] = 1.0
    first /= first.sum()
    # one sample: visible 2, 2, 3; masked 2 (position 4) and 5 (position 0)
    samples = [(np.array([2, 2, 3]), np.array([2, 5]), np.array([4, 0]))]
    # corpus frequencies only
    assert math.isclose(cb.mean_nll(samples, p, float("inf"), None),
                        (-math.log(p[2]) - math.log(p[5])) / 2, rel_tol=1e-9)
    # alpha 1: (counts + p) / (3 + 1)
    expect = (-math.log((2 + p[2]) / 4) - math.log((0 + p[5]) / 4)) / 2
    assert math.isclose(cb.mean_nll(samples, p, 1.0, None), expect, rel_tol=1e-9)
    # the first position from the first-token frequencies
    expect0 = (-math.log((2 + p[2]) / 4) - math.log(first[5])) / 2
    assert math.isclose(cb.mean_nll(samples, p, 1.0, first), expect0, rel_tol=1e-9)
