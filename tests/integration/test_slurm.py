"""The SLURM profile against a real one-node Slurm cluster on this machine (scripts/slurm_local.py).

Runs a subset of config/ci.yaml (HIGGS: download -> prepare -> split, one pretrain, its linear
evaluation with the frozen features) through `--workflow-profile workflow/profiles/slurm`, checks
that every job was an sbatch submission with the profile's partition, the memory and time of the
config's `resources`, the rule's CPUs and the GPU request, and that the numbers equal those of a
local run of the same targets. Needs root (apt-get install slurm-wlm
munge, daemons started by hand); skipped, with the reason, where that is impossible.
"""
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, copy_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

TARGETS = ["data/results/higgs/sma/linear/fixed/seed0.json"]
# the three tiny data rules go in one submission (a Snakemake group job); the rest one job each
GROUPS = ["download_higgs=data", "prepare_higgs=data", "split_higgs=data"]
SLURM_FLAGS = [
    "--workflow-profile", "workflow/profiles/slurm",
    "--slurm-status-command", "squeue",  # no slurmdbd here, hence no sacct
    "--slurm-init-seconds-before-status-checks", "4",
    "--slurm-keep-successful-logs",
    "--retries", "0",
    "--jobs", "4",
    "--groups", *GROUPS,
]
SLURM_RUN_TIMEOUT_S = 480
LOCAL_RUN_TIMEOUT_S = 480
# fields of a result that depend on the machine or the clock, not on the computation
VOLATILE = {"wall_time_s", "host", "checkpoint_sha256"}
LOG_VOLATILE = {"tokens_per_s", "elapsed_s"}

# the run config's per-step resources, which the jobs must ask Slurm for (paper-like sizes)
RESOURCES = {"pretrain": (32000, 1440), "evaluate_linear": (16000, 180)}
RESOURCES_YAML = "resources:\n" + "".join(f"  {k}: {{mem_mb: {m}, runtime: {r}}}\n" for k, (m, r) in RESOURCES.items())


def _stable(result: dict) -> dict:
    """A result JSON without what differs between two runs of the same job: its timings."""
    out = {k: v for k, v in result.items() if k not in VOLATILE}
    if "probe" in out:  # the probe's fits record their seconds
        out["probe"] = {**out["probe"], "grid": [{k: v for k, v in g.items() if k != "seconds"} for g in out["probe"].get("grid", [])]}
    return out


def _slurm_local():
    spec = importlib.util.spec_from_file_location("slurm_local", ROOT / "scripts" / "slurm_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _workdir(path: Path) -> Path:
    copy_workflow(path)
    (path / "resources.yaml").write_text(RESOURCES_YAML)
    return path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKBENCH_SLURM_")}
    # the jobs run `python -m snakemake` and the rules' commands: the same environment as here
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MASKBENCH_SLURM_PARTITION"] = _slurm_local().PARTITION
    return env


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (apt-get install, munged/slurmctld/slurmd)")
    sl = _slurm_local()
    with sl.exclusive():
        try:
            sl.install(log=lambda *_: None)
        except sl.Unavailable as e:
            pytest.skip(f"cannot install Slurm here: {e}")
        state = sl.default_state_dir()
        already_up = sl.is_up(state)  # brought up by hand: reuse it, leave it running
        try:
            pids = sl.start(state, log=lambda *_: None)
        except sl.Unavailable as e:
            pytest.skip(f"cannot run a local Slurm cluster here: {e}")
        try:
            yield pids
        finally:
            if not already_up:
                sl.stop(state, log=lambda *_: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cluster):
    """The same targets run locally (in the background, while Slurm runs) and through Slurm."""
    local = _workdir(tmp_path_factory.mktemp("local_run"))
    slurm = _workdir(tmp_path_factory.mktemp("slurm_run"))
    cmd = [sys.executable, "-m", "snakemake"]
    t0 = time.monotonic()
    local_log = local / "snakemake.out"
    with open(local_log, "w") as out:
        local_proc = subprocess.Popen(
            [*cmd, "--cores", "2", *TARGETS, "--configfile", "config/ci.yaml", "resources.yaml"],
            cwd=local, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        s = subprocess.run(
            [*cmd, *TARGETS, *SLURM_FLAGS, "--configfile", "config/ci.yaml", "resources.yaml"],
            cwd=slurm, env=_env(), capture_output=True, text=True, timeout=SLURM_RUN_TIMEOUT_S,
        )
        slurm_out = s.stdout + s.stderr
        assert s.returncode == 0, slurm_out[-6000:]
        local_proc.wait(timeout=LOCAL_RUN_TIMEOUT_S)
        assert local_proc.returncode == 0, local_log.read_text()[-4000:]
    finally:
        if local_proc.poll() is None:
            local_proc.kill()
            local_proc.wait()
    print(f"local + slurm runs: {time.monotonic() - t0:.0f}s")
    return {"local": local, "slurm": slurm, "slurm_out": slurm_out}


def _scontrol(jobid: str) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True).stdout
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", out))


def test_every_job_was_an_sbatch_submission_with_the_profile_resources(runs):
    jobids = re.findall(r"submitted with SLURM jobid (\d+)", runs["slurm_out"])
    # the data group, one pretraining job per seed of the CI config (the linear job reads both), the linear job
    assert len(jobids) == 4, runs["slurm_out"][-3000:]
    by_rule = {}
    for jobid in jobids:
        info = _scontrol(jobid)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info
        assert info["Partition"] == "maskbench", info  # MASKBENCH_SLURM_PARTITION -> sbatch -p
        # the plugin's --comment: rule_<rule>_wildcards_<values>, or rule_<group>_<rules> for a group
        by_rule[re.sub(r"^rule_|_wildcards_.*$", "", info["Comment"])] = info
    assert set(by_rule) == {"data_download_higgs_prepare_higgs_split_higgs", "pretrain", "evaluate_linear_higgs"}, by_rule
    # memory and time from the config's resources.<step>; GPU steps get --gpus=1; cpus-per-task =
    # the rule's threads
    for rule, (mem, minutes) in RESOURCES.items():
        info = by_rule[rule if rule == "pretrain" else f"{rule}_higgs"]
        assert info["MinMemoryNode"] == f"{mem}M", (rule, info)
        h, m = divmod(minutes, 60)
        assert info["TimeLimit"] in (f"{h:02d}:{m:02d}:00", f"{h // 24}-{h % 24:02d}:{m:02d}:00"), (rule, info)
    linear, data = by_rule["evaluate_linear_higgs"], by_rule["data_download_higgs_prepare_higgs_split_higgs"]
    assert "gpu:1" in by_rule["pretrain"].get("TresPerJob", "") and "gpu:1" in linear.get("TresPerJob", "")
    assert "gpu" not in data.get("TresPerJob", "")
    assert by_rule["pretrain"]["NumCPUs"] == "1" and linear["NumCPUs"] == "1"  # the rules' threads (resources.pretrain.threads)
    logs = sorted(p.relative_to(runs["slurm"]) for p in (runs["slurm"] / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(logs) == 4, logs
    for log in logs:
        text = (runs["slurm"] / log).read_text()
        assert "Finished jobid" in text, log  # the job's own Snakemake ran the rule


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_slurm_results_equal_the_local_run(runs):
    local, slurm = runs["local"], runs["slurm"]
    # data targets and features: byte for byte
    for sub in ["data/raw/higgs", "data/processed/higgs", "data/features/higgs"]:
        files = sorted(p.relative_to(local) for p in (local / sub).rglob("*") if p.is_file())
        assert files, sub
        assert files == sorted(p.relative_to(slurm) for p in (slurm / sub).rglob("*") if p.is_file())
        for f in files:
            assert _sha(local / f) == _sha(slurm / f), f
    # the checkpoint: same weights (its metadata holds wall time and throughput)
    import torch

    a, b = (torch.load(d / "data/checkpoints/higgs/sma/seed0/model.pt", map_location="cpu", weights_only=False) for d in (local, slurm))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    la, lb = ([{k: v for k, v in json.loads(line).items() if k not in LOG_VOLATILE} for line in (d / "data/checkpoints/higgs/sma/seed0/log.jsonl").read_text().splitlines()] for d in (local, slurm))
    assert la == lb and la
    # the evaluation: same numbers
    for t in TARGETS:
        ra, rb = (json.loads((d / t).read_text()) for d in (local, slurm))
        assert isinstance(ra["test"], float)
        assert _stable(ra) == _stable(rb)


def _touch_restored(wd: Path) -> None:
    """What `dvc checkout` may do to unchanged files: same bytes, new modification times, here in
    the worst order (every input newer than the outputs made from it)."""
    now = time.time()
    order = ["results", "features", "checkpoints", "processed", "raw"]
    for i, stage in enumerate(order):
        for p in (wd / "data" / stage).rglob("*"):
            if p.is_file():
                os.utime(p, (now + 10 * i, now + 10 * i))


def test_new_mtimes_on_restored_files_rerun_nothing(runs):
    # local default profile, then the SLURM profile: the outputs are up to date for both, also
    # after every file under data/ got a new modification time with unchanged content
    for wd, flags in [(runs["local"], ["--cores", "2"]), (runs["slurm"], SLURM_FLAGS)]:
        _touch_restored(wd)
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", *TARGETS, *flags, "--configfile", "config/ci.yaml"],
                           cwd=wd, env=_env(), capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "Nothing to be done" in out, out[-3000:]
