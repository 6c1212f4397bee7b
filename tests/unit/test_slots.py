"""GPU slots: one device per concurrent job, chosen by lock files (simulated device counts)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_src.train import slots
from pipeline_src.train.slots import GpuSlotTimeout, gpu_slot, job_slot

REPO = Path(__file__).resolve().parents[2]

# holds a slot until the file named by argv[1] appears; prints the id and CUDA_VISIBLE_DEVICES
HOLDER = """
import os, sys, time
from pathlib import Path
from pipeline_src.train.slots import gpu_slot
with gpu_slot(poll_s=0.05, timeout_s=float(sys.argv[2])) as gpu:
    print(f"{gpu} {os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.02)
"""


@pytest.fixture
def sim(tmp_path: Path, monkeypatch) -> Path:
    """A simulated machine: no CUDA_VISIBLE_DEVICES, a private lock folder."""
    lock_dir = tmp_path / "locks"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("MASKBENCH_DEVICE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("MASKBENCH_GPU_LOCK_DIR", str(lock_dir))
    return lock_dir


def _holder(release: Path, env: dict[str, str], timeout_s: float = 30.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(release), str(timeout_s)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_no_gpu_yields_none_and_sets_nothing(sim: Path, monkeypatch):
    monkeypatch.setenv("MASKBENCH_GPU_COUNT", "0")
    with gpu_slot() as gpu:
        assert gpu is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not sim.exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every device hidden
    monkeypatch.delenv("MASKBENCH_GPU_COUNT")
    with gpu_slot() as gpu:
        assert gpu is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_count_without_env_on_this_build(sim: Path, monkeypatch):
    import torch

    monkeypatch.delenv("MASKBENCH_GPU_COUNT", raising=False)
    n = slots.count_gpus()
    assert n >= 0
    if torch.version.cuda is None:
        assert n == 0
    assert not torch.cuda.is_initialized()  # counting does not start CUDA here


def _fresh_slot(**kw):
    """A slot taken as a new job would take it: with the machine's CUDA_VISIBLE_DEVICES (unset)."""
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    return gpu_slot(timeout_s=kw.pop("timeout_s", 5), poll_s=0.05, log=lambda m: None, **kw)


def test_slots_get_distinct_devices_and_restore_env(sim: Path, monkeypatch):
    monkeypatch.setenv("MASKBENCH_GPU_COUNT", "2")
    with _fresh_slot() as a:
        assert a == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        with _fresh_slot() as b:  # the lock is per open file, so this one conflicts with the first
            assert b == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            with pytest.raises(GpuSlotTimeout, match="all 2 slots"):
                with _fresh_slot(timeout_s=0.2):
                    pass
        assert "CUDA_VISIBLE_DEVICES" not in os.environ  # restored to what it was on entry
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert sorted(p.name for p in sim.iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_existing_visible_devices_are_the_slots(sim: Path, monkeypatch):
    monkeypatch.delenv("MASKBENCH_GPU_COUNT", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with gpu_slot(timeout_s=5, log=lambda m: None) as a:
        assert a == 3 and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"  # as another job started with the same list sees it
        with gpu_slot(timeout_s=5, log=lambda m: None) as b:
            assert b == 5 and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert sorted(p.name for p in sim.iterdir()) == ["gpu3.lock", "gpu5.lock"]  # named by physical id
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")
    monkeypatch.setenv("MASKBENCH_GPU_COUNT", "1")  # caps the list
    assert slots.candidate_devices() == ["GPU-aa"]
    with gpu_slot(timeout_s=5, log=lambda m: None) as a:
        assert a == "GPU-aa" and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aa"


def test_job_slot_skips_explicit_devices_and_torchrun(sim: Path, monkeypatch):
    monkeypatch.setenv("MASKBENCH_GPU_COUNT", "1")
    with job_slot("cuda:1") as gpu:
        assert gpu is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("WORLD_SIZE", "2")
    with job_slot(None) as gpu:
        assert gpu is None
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("MASKBENCH_GPU_WAIT_S", "5")
    with job_slot(None) as gpu:
        assert gpu == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_concurrent_processes_get_distinct_ids_and_the_extra_one_waits(sim: Path, tmp_path: Path):
    n = 3
    env = _env(MASKBENCH_GPU_COUNT=str(n), MASKBENCH_GPU_LOCK_DIR=str(sim))
    releases = [tmp_path / f"release{i}" for i in range(n + 1)]
    procs = [_holder(releases[i], env) for i in range(n)]
    try:
        firsts = [p.stdout.readline().split() for p in procs]
        ids = sorted(int(f[0]) for f in firsts)
        assert ids == list(range(n))
        assert all(f[0] == f[1] for f in firsts)  # CUDA_VISIBLE_DEVICES names the same device
        extra = _holder(releases[n], env)
        procs.append(extra)
        deadline = time.monotonic() + 30
        message = ""
        while "busy" not in message and time.monotonic() < deadline:  # it reports that it waits
            message += extra.stderr.readline()
        assert f"all {n} GPU slots" in message and "waiting" in message
        time.sleep(0.3)
        assert extra.poll() is None
        freed = int(firsts[1][0])
        releases[1].touch()
        assert procs[1].wait(timeout=30) == 0
        got = extra.stdout.readline().split()
        assert got == [str(freed), str(freed)]
    finally:
        for r in releases:
            r.touch()
        for p in procs:
            p.wait(timeout=30)
            p.stdout.close()
            p.stderr.close()


def test_a_killed_holder_frees_its_slot(sim: Path, tmp_path: Path, monkeypatch):
    env = _env(MASKBENCH_GPU_COUNT="1", MASKBENCH_GPU_LOCK_DIR=str(sim))
    proc = _holder(tmp_path / "never", env)
    try:
        assert proc.stdout.readline().split() == ["0", "0"]
        monkeypatch.setenv("MASKBENCH_GPU_COUNT", "1")
        with pytest.raises(GpuSlotTimeout, match=r"pid \d+"):  # held, and the message says by whom
            with gpu_slot(timeout_s=0.2, poll_s=0.05, log=lambda m: None):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with gpu_slot(timeout_s=10, poll_s=0.05, log=lambda m: None) as gpu:
            assert gpu == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_training_commands_hold_a_slot(sim: Path, monkeypatch):
    """The CLI's pretrain and the linear (it computes features) and finetune evaluations run inside a
    slot; the classical baselines do not."""
    import pipeline_src.evaluate.run as eval_run
    import pipeline_src.train.pretrain as pretrain_mod
    from pipeline_src.cli import main

    seen = []
    record = lambda *a, **k: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))  # noqa: E731
    import pipeline_src.config as config_mod
    import pipeline_src.spec as spec_mod

    monkeypatch.setattr(pretrain_mod, "run_pretrain", record)
    monkeypatch.setattr(config_mod, "load_config", lambda path: {"registry": "r.yaml"})
    monkeypatch.setattr(spec_mod, "resolve_pretrain", lambda cfg, corpus, method: None)
    monkeypatch.setattr(config_mod, "load_registry", lambda path: {})
    monkeypatch.setattr(spec_mod, "resolve_evaluate", lambda cfg, registry, dataset, method, protocol: None)
    monkeypatch.setattr(eval_run, "run_evaluate", record)
    monkeypatch.setenv("MASKBENCH_GPU_COUNT", "2")
    monkeypatch.setenv("MASKBENCH_GPU_WAIT_S", "5")
    common = ["--config", "c.yaml", "--processed", "p", "--out", "o"]
    ev = ["evaluate", *common, "--dataset", "d", "--method", "m"]
    with _fresh_slot():  # another job holds GPU 0
        os.environ.pop("CUDA_VISIBLE_DEVICES")  # the commands start as a new job would
        assert main(["pretrain", *common, "--corpus", "c", "--method", "m"]) == 0
        assert main([*ev, "--protocol", "linear"]) == 0
        assert main([*ev, "--protocol", "finetune"]) == 0
        assert main([*ev, "--protocol", "classical"]) == 0
        assert main(["pretrain", *common, "--corpus", "c", "--method", "m", "--device", "cpu"]) == 0
    assert seen == ["1", "1", "1", None, None]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
