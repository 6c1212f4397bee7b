"""Sampler, subsampling, devices and checkpoint primitives of pipeline_src.train."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pipeline_src.train.checkpoint import (CheckpointMismatch, atomic_save, load_checkpoint, rng_state,
                                           save_checkpoint, set_rng_state)
from pipeline_src.train.data import BucketBatchSampler, subsample, subsample_indices
from pipeline_src.train.devices import autocast, pick_device, seed_everything
from test_train_support import toy_corpus


def _epoch(sampler: BucketBatchSampler) -> list[np.ndarray]:
    """The batches of the sampler's next epoch (starting at position 0)."""
    return [sampler.next_batch() for _ in range(len(sampler.epoch_batches(sampler.epoch)))]


def test_sampler_is_deterministic_per_seed():
    lengths = toy_corpus(200).lengths()
    s1, s2, s3 = (BucketBatchSampler(lengths, 16, seed=s) for s in (3, 3, 4))
    run1 = [s1.next_batch() for _ in range(30)]
    run2 = [s2.next_batch() for _ in range(30)]
    run3 = [s3.next_batch() for _ in range(30)]
    assert all(np.array_equal(x, y) for x, y in zip(run1, run2))
    assert not all(np.array_equal(x, y) for x, y in zip(run1, run3))


def test_sampler_covers_every_sample_once_per_epoch():
    n = 203  # not a multiple of the batch size
    s = BucketBatchSampler(toy_corpus(n).lengths(), 16, seed=0, bucket_batches=4)
    per_epoch = -(-n // 16)
    for epoch in range(3):
        batches = [s.next_batch() for _ in range(per_epoch)]
        assert s.epoch == epoch
        assert all(len(b) <= 16 for b in batches)
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    first, second = (np.concatenate(s.epoch_batches(e)) for e in (0, 1))
    assert not np.array_equal(first, second)  # reshuffled per epoch


def test_bucketing_pads_less_than_random_batches():
    corpus = toy_corpus(1600, min_len=2, max_len=120)
    lengths = corpus.lengths()
    s = BucketBatchSampler(lengths, 32, seed=0, bucket_batches=50)
    bucketed = _epoch(s)
    perm = np.random.default_rng(0).permutation(len(lengths))
    plain = [perm[i:i + 32] for i in range(0, len(perm), 32)]

    def padded(batches):
        return sum(int(corpus.batch(b, 1000).x.numel()) for b in batches)

    assert padded(bucketed) < 0.75 * padded(plain)
    # batches are padded per batch, to their own longest sample
    b = bucketed[0]
    assert corpus.batch(b, 1000).x.shape[1] == lengths[b].max()


def test_sampler_state_resumes_exactly_across_epochs():
    lengths = toy_corpus(100).lengths()  # 7 batches per epoch
    ref = BucketBatchSampler(lengths, 16, seed=5, bucket_batches=2)
    expected = [ref.next_batch() for _ in range(20)]
    a = BucketBatchSampler(lengths, 16, seed=5, bucket_batches=2)
    head = [a.next_batch() for _ in range(9)]
    b = BucketBatchSampler(lengths, 16, seed=0, bucket_batches=2)
    b.load_state_dict(a.state_dict())
    tail = [b.next_batch() for _ in range(11)]
    assert all(np.array_equal(x, y) for x, y in zip(head + tail, expected))
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(lengths, 8, seed=5).load_state_dict(a.state_dict())


def test_subsample_is_seeded_and_sorted():
    idx = subsample_indices(1000, 100, seed=1)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100 and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, subsample_indices(1000, 100, seed=1))
    assert not np.array_equal(idx, subsample_indices(1000, 100, seed=2))
    assert np.array_equal(subsample_indices(50, None, 0), np.arange(50))
    assert np.array_equal(subsample_indices(50, 80, 0), np.arange(50))
    corpus = toy_corpus(120)
    sub = subsample(corpus, 30, seed=0)
    assert len(sub) == 30 and sub.ids.tolist() == corpus.ids[subsample_indices(120, 30, 0)].tolist()


def test_pick_device_and_autocast(monkeypatch):
    monkeypatch.setenv("MASKBENCH_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("MASKBENCH_DEVICE")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
    with autocast(torch.device("cpu")):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.float32


def test_seed_everything_reproduces_draws():
    seed_everything(7, threads=1)
    a = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(7, threads=1)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert torch.get_num_threads() == 1


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    seed_everything(11)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()  # and one in numpy's
    atomic_save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(4), np.random.randn(4), random.gauss(0, 1), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(4), np.random.randn(4), random.gauss(0, 1), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_atomic_save_leaves_no_temp_files_and_refuses_other_hash(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"run_hash": "abc", "method": "toy", "step": 3, "w": torch.ones(2)})
    save_checkpoint(path, {"run_hash": "abc", "method": "toy", "step": 4, "w": torch.ones(2)})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert load_checkpoint(path, "abc")["step"] == 4
    with pytest.raises(CheckpointMismatch, match="another run"):
        load_checkpoint(path, "def")
    with pytest.raises(KeyError):
        save_checkpoint(path, {"step": 1})


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save({"a": torch.zeros(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"a": Unpicklable()}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(1))
