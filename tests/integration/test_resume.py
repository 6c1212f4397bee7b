"""Long runs survive being killed: the real snakemake on the tiny CI setup (HIGGS corpus, one
pretraining job made long enough to be killed mid-run by an extra config file).

* SIGKILL of the ``python -m pipeline_src pretrain`` process after its first checkpoint: the rerun
  (``--rerun-incomplete``) resumes from ``last.pt`` and ends with the weights of an uninterrupted run.
* SIGKILL of snakemake itself mid-job: even with every declared output of the job in place, a dry
  run refuses to trust them (incomplete-output marking) and schedules the job again.
* An unreadable corpus file: the error names the file.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import copy_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the job's process in /proc")]

TARGET = "data/checkpoints/higgs/random/seed0/model.pt"
JOB_DIR = Path("data/checkpoints/higgs/random/seed0")
JOB_LOG = Path("data/logs/pretrain/higgs/random/seed0.log")
EXTRA = "domains:\n  physics:\n    pretrain: {steps: 40, checkpoint_every: 4}\n"
CONFIGS = ("config/ci.yaml", "resume.yaml")


def _cmd(*args: str) -> list[str]:
    # one core: the job runs with one thread, so every run of it is bit-reproducible, and steps are
    # slow enough on a busy machine... and fast enough on an idle one
    return [sys.executable, "-m", "snakemake", "--cores", "1", *args, "--configfile", *CONFIGS]


def _run(wd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), cwd=wd, capture_output=True, text=True, timeout=timeout)


def _start(wd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(*args), cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _pretrain_pids(wd: Path) -> list[int]:
    """The ``python -m pipeline_src pretrain`` processes running in ``wd`` (not its shell)."""
    want = os.path.realpath(wd)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if b"pipeline_src" in argv and b"pretrain" in argv and os.path.realpath(d / "cwd") == want:
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"snakemake ended ({proc.returncode}) before {what}:\n{out[-4000:]}")
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def wd(tmp_path_factory) -> Path:
    """A scratch copy of the workflow with the prepared corpus and an uninterrupted reference run
    of the job (its model.pt and log.jsonl under ``reference/``)."""
    wd = copy_workflow(tmp_path_factory.mktemp("resume_run"))
    (wd / "resume.yaml").write_text(EXTRA)
    r = _run(wd, TARGET)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    ref = wd / "reference"
    ref.mkdir()
    for name in ("model.pt", "log.jsonl"):
        shutil.copy2(wd / JOB_DIR / name, ref / name)
    return wd


def test_killed_pretrain_job_resumes_from_its_checkpoint_to_the_same_weights(wd: Path):
    shutil.rmtree(wd / JOB_DIR, ignore_errors=True)
    proc = _start(wd, "--rerun-incomplete", TARGET)
    try:
        pids = _wait_for(lambda: (wd / JOB_DIR / "last.pt").exists() and _pretrain_pids(wd), proc, "the first checkpoint")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out[-3000:]
    assert not (wd / JOB_DIR / "model.pt").exists(), "the job finished before it was killed: raise pretrain.steps"
    assert (wd / JOB_DIR / "last.pt").exists()  # not a declared output: snakemake keeps it

    r = _run(wd, "--rerun-incomplete", TARGET)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    log = (wd / JOB_LOG).read_text()
    summary = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    assert summary["finished"] and summary["steps"] == 40
    assert summary["resumed_from"] is not None and 4 <= summary["resumed_from"] < 40
    assert f"resuming from {JOB_DIR / 'last.pt'} at step {summary['resumed_from']}" in log
    ref, got = _weights(wd / "reference" / "model.pt"), _weights(wd / JOB_DIR / "model.pt")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert _losses(wd / JOB_DIR / "log.jsonl") == _losses(wd / "reference" / "log.jsonl")


def test_killed_snakemake_leaves_outputs_that_a_rerun_does_not_trust(wd: Path):
    shutil.rmtree(wd / JOB_DIR)
    proc = _start(wd, TARGET)
    try:
        _wait_for(lambda: _pretrain_pids(wd), proc, "the job started")
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job die together (lost node, OOM killer)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    for pid in _pretrain_pids(wd):  # nothing may survive into the reruns
        os.kill(pid, signal.SIGKILL)
    # the worst case: every declared output of the job exists, yet the job never completed
    (wd / JOB_DIR).mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "log.jsonl"):
        shutil.copy2(wd / "reference" / name, wd / JOB_DIR / name)
    dry = _run(wd, "-n", TARGET)
    text = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "IncompleteFilesException" in text, text[-3000:]
    assert str(JOB_DIR / "model.pt") in text and str(JOB_DIR / "log.jsonl") in text
    dry = _run(wd, "-n", "--rerun-incomplete", TARGET)
    text = dry.stdout + dry.stderr
    assert dry.returncode == 0 and "rule pretrain:" in text and f"output: {TARGET}" in text, text[-3000:]
    # the killed snakemake also left its lock behind: a real run needs `snakemake --unlock` first
    locks = wd / ".snakemake" / "locks"
    assert any(locks.iterdir())
    shutil.rmtree(locks)  # what --unlock does, without starting snakemake once more


def test_unreadable_corpus_file_is_named(wd: Path, tmp_path: Path):
    bad = tmp_path / "processed" / "higgs"
    shutil.copytree(wd / "data" / "processed" / "higgs", bad)
    table = bad / "table.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])  # a truncated copy
    config = next((wd / "data" / "run_config").glob("*.yaml"))
    from pipeline_src.cli import main

    with pytest.raises(SystemExit) as err:  # what `python -m pipeline_src pretrain ...` prints and exits with
        main(["pretrain", "--config", str(config), "--corpus", "higgs", "--method", "random", "--processed", str(bad),
              "--out", str(tmp_path / "out"), "--threads", "1", "--device", "cpu"])
    assert str(err.value.code).startswith(f"input error: {table}: unreadable"), err.value.code


def test_unreadable_shard_is_named(tmp_path: Path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline_src.train.pretrain import CorpusReadError, load_corpus

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"id": [f"s{i}"], "tokens": pa.array([[65, 66]], type=pa.list_(pa.uint8()))}),
                       shards / f"part-{i:05d}.parquet")
    assert len(load_corpus(tmp_path, fold=None)) == 3
    (shards / "part-00001.parquet").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CorpusReadError, match=r"part-00001\.parquet: unreadable"):
        load_corpus(tmp_path, fold="train")
