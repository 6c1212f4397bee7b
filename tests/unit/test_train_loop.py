"""The pretraining loop: schedule, checkpoints, resume (also after SIGKILL), divergence, model file."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline_src.batch import InputSpec
from pipeline_src.train.checkpoint import CheckpointMismatch
from pipeline_src.train.loop import TrainingDiverged, param_groups, pretrain, warmup_cosine
from test_train_support import MAX_LEN, ToyMethod, make_method, toy_corpus, train_cfg

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _run(out_dir: Path, steps: int = 12, every: int = 5, stop_after: int | None = None, **method_cfg) -> dict:
    corpus = toy_corpus()
    method = make_method(corpus, **method_cfg)
    return pretrain(method, corpus, train_cfg(steps, every), MAX_LEN, out_dir, seed=0, device="cpu", threads=1,
                    model_cfg=method.model_cfg, method_cfg=method.method_cfg, stop_after=stop_after, progress=False)


def _log_steps(out_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "model.pt", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 12-step run."""
    out = tmp_path_factory.mktemp("reference")
    _run(out)
    return out


def test_warmup_cosine_shape():
    f = warmup_cosine(10, 110)
    warm = [f(s) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(10, 110))
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3 * f(s) for s in range(30)])


def test_param_groups_exempt_biases_norms_embeddings():
    method = make_method(toy_corpus(20))
    decay, no_decay = param_groups(method, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in method.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {"head.weight", "encoder.1.weight", "encoder.4.weight"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(method.parameters()))


def test_full_run_writes_model_log_and_checkpoint(reference: Path):
    assert sorted(p.name for p in reference.iterdir()) == ["last.pt", "log.jsonl", "meta.json", "model.pt"]  # no temp files
    assert _log_steps(reference) == list(range(1, 13))
    rec = json.loads((reference / "log.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "mask_ratio", "tokens_per_s", "elapsed_s"} <= rec.keys()
    assert 0.0 < rec["mask_ratio"] < 1.0 and math.isfinite(rec["loss"])
    blob = torch.load(reference / "model.pt", weights_only=True)
    meta = blob["meta"]
    assert meta["method"] == "toy" and meta["steps"] == 12 and meta["spec"]["max_len"] == MAX_LEN
    assert meta["model_cfg"] == {"dim": 16} and meta["method_cfg"]["mask_ratio"] == 0.3
    assert meta["final_loss"] == rec["loss"] and meta["peak_memory_bytes"] > 0
    assert meta["tokens_per_s"] > 0 and meta["wall_time_s"] > 0 and len(meta["run_hash"]) == 16
    rebuilt = ToyMethod(InputSpec(**meta["spec"]), meta["model_cfg"], meta["method_cfg"])
    rebuilt.load_state_dict(blob["state_dict"])  # the state dict is the method's, complete
    ckpt = torch.load(reference / "last.pt", weights_only=True)
    assert ckpt["step"] == 12 and ckpt["sampler"]["position"] > 0


def test_training_reduces_the_loss(tmp_path: Path):
    _run(tmp_path, steps=60, every=60)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3


def test_stop_and_resume_in_a_fresh_object_is_bit_identical(tmp_path: Path, reference: Path):
    summary = _run(tmp_path, stop_after=7)
    assert summary["steps"] == 7 and not summary["finished"] and not (tmp_path / "model.pt").exists()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 7
    summary = _run(tmp_path)
    assert summary["resumed_from"] == 7 and summary["finished"]
    _assert_same_weights(tmp_path, reference)
    assert _log_steps(tmp_path) == list(range(1, 13))
    # the log survives its deletion (Snakemake removes declared outputs before a rerun)
    (tmp_path / "log.jsonl").unlink()
    (tmp_path / "model.pt").unlink()
    _run(tmp_path)
    assert _log_steps(tmp_path) == list(range(1, 13))
    # a finished run started again only rewrites model.pt
    assert _run(tmp_path)["resumed_from"] == 12
    _assert_same_weights(tmp_path, reference)


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, reference: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    script = [sys.executable, str(HERE / "test_train_support.py"), str(tmp_path), "12", "5", "0.15"]
    proc = subprocess.Popen(script, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "last.pt"
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert not (tmp_path / "model.pt").exists(), "the run ended before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert killed_at == 5
    assert _log_steps(tmp_path)[-1] >= killed_at  # may hold steps past the checkpoint
    # resume in a second process, as a rerun of the job would
    rerun = subprocess.run(script[:-1] + ["0"], env=env, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    _assert_same_weights(tmp_path, reference)
    assert _log_steps(tmp_path) == list(range(1, 13))  # truncated to the checkpoint, no duplicates
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "log.jsonl", "meta.json", "model.pt"]


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path: Path):
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 8; the last good checkpoint .*\(step 5\)"):
        _run(tmp_path, nan_at_step=7)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 5
    assert not (tmp_path / "model.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "log.jsonl"]
    assert _log_steps(tmp_path) == list(range(1, 8))


def test_checkpoint_of_another_config_is_refused(tmp_path: Path):
    _run(tmp_path, stop_after=5)
    corpus = toy_corpus()
    method = make_method(corpus)
    with pytest.raises(CheckpointMismatch, match="configuration changed"):
        pretrain(method, corpus, train_cfg(12, 5, lr=1e-2), MAX_LEN, tmp_path, seed=0, device="cpu", threads=1,
                 model_cfg=method.model_cfg, method_cfg=method.method_cfg, progress=False)
    with pytest.raises(CheckpointMismatch):
        _run(tmp_path, mask_ratio=0.5)
    # checkpoint_every does not change the trajectory, so it may change on resume
    corpus = toy_corpus()
    method = make_method(corpus)
    pretrain(method, corpus, train_cfg(12, 4), MAX_LEN, tmp_path, seed=0, device="cpu", threads=1,
             model_cfg=method.model_cfg, method_cfg=method.method_cfg, progress=False)
