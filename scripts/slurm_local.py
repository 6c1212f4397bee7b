"""A one-node Slurm cluster on this machine, to run the workflow through the SLURM profile locally.

Needs root and Debian's packages (Slurm 22.05); no systemd, cgroups or slurmdbd:

    python scripts/slurm_local.py install   # apt-get install slurm-wlm munge (skipped if present)
    python scripts/slurm_local.py start     # munged (unless one answers), slurmctld, slurmd
    python scripts/slurm_local.py status
    python scripts/slurm_local.py stop      # cancels its jobs, stops what `start` started, by PID

`start` writes /etc/slurm/slurm.conf and /etc/slurm/gres.conf (the job steps read the config from
there, whatever SLURM_CONF says) and refuses to touch files there that it did not write. The node
gets this machine's CPUs (`slurmd -C`), at least 64 GB of (unenforced) memory, two GPU slots
without devices (so that the profile's GPU requests are scheduled as on a real cluster) and one
partition, `maskbench` (the default). State, logs and the PIDs live in --state-dir (default:
<tmp>/maskbench-slurm, or $MASKBENCH_SLURM_STATE). Without slurmdbd there is no `sacct`: run
Snakemake with `--slurm-status-command squeue`, e.g.

    MASKBENCH_SLURM_PARTITION=maskbench snakemake --workflow-profile workflow/profiles/slurm \
        --slurm-status-command squeue --slurm-init-seconds-before-status-checks 4 \
        --configfile config/ci.yaml data
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTITION = "maskbench"
# GPU slots for scheduling only: no device behind them (character devices every Linux has), so
# that jobs asking for `--gpus` are placed as on a GPU cluster; torch still sees no CUDA device.
FAKE_GPU_FILES = ["/dev/null", "/dev/zero"]
GPUS_PER_NODE = len(FAKE_GPU_FILES)
MARKER = "# maskbench local test cluster (scripts/slurm_local.py); removed by `stop`"
CONF_DIR = Path("/etc/slurm")
SLURM_CONF = CONF_DIR / "slurm.conf"
GRES_CONF = CONF_DIR / "gres.conf"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munged", "munge"]
PACKAGES = ["slurm-wlm", "munge"]
ADVERTISED_MEM_MB = 65536
DAEMONS = ["slurmd", "slurmctld", "munged"]  # stop order


class Unavailable(RuntimeError):
    """This machine cannot host the local cluster (not root, packages missing, foreign Slurm)."""


def default_state_dir() -> Path:
    return Path(os.environ.get("MASKBENCH_SLURM_STATE", Path(tempfile.gettempdir()) / "maskbench-slurm"))


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def install(log=print) -> None:
    """apt-get install the packages unless every binary is already there."""
    if os.geteuid() != 0:
        raise Unavailable("installing Slurm needs root")
    if not missing_binaries():
        return
    if shutil.which("apt-get") is None:
        raise Unavailable("no apt-get to install slurm-wlm and munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", *PACKAGES]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        log("apt-get install failed; running apt-get update and trying again")
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0 or missing_binaries():
        raise Unavailable(f"apt-get could not install {' '.join(PACKAGES)}: {(r.stdout + r.stderr)[-1500:]}")


def node_hardware() -> dict[str, str]:
    """CPUs, sockets, cores, threads and memory as slurmd sees them."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    keep = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"]
    return {k: fields[k] for k in keep if k in fields}


def slurm_conf(state: Path, host: str, hw: dict[str, str]) -> str:
    # The node advertises at least ADVERTISED_MEM_MB so that the profile's cluster-sized memory
    # requests (up to 32 GB) can be scheduled on a small test machine: slurmd takes the configured
    # size (config_overrides) and nothing enforces it (no cgroups). The CPUs are the real ones.
    cpus, mem = int(hw["CPUs"]), max(int(hw["RealMemory"]), ADVERTISED_MEM_MB)
    node = " ".join(f"{k}={v}" for k, v in {**hw, "RealMemory": mem}.items())
    return f"""{MARKER}
ClusterName=maskbench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={max(100, mem // (2 * cpus))}
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 {node} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _write_ours(path: Path, text: str) -> None:
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        raise Unavailable(f"{path} exists and was not written by scripts/slurm_local.py; not touching it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _remove_ours(path: Path) -> None:
    if path.exists() and MARKER in path.read_text(errors="replace"):
        path.unlink()


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _running(name: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(int(p.name)) == name and _alive(int(p.name))]


def _munge_answers() -> bool:
    try:
        m = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=5)
        if m.returncode != 0:
            return False
        return subprocess.run([_which("unmunge")], input=m.stdout, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired, TypeError):
        return False


def _wait(check, timeout: float, what: str, logs: list[Path]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tails}")


def _spawn(cmd: list[str], log: Path, **kw) -> int:
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    return p.pid


@contextlib.contextmanager
def exclusive(timeout: float = 900):
    """Hold the machine-wide lock of the local cluster (two test runs on one machine take turns)."""
    with open(Path(tempfile.gettempdir()) / "maskbench-slurm.lock", "w") as f:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise RuntimeError(f"the local Slurm cluster stayed locked for {timeout:.0f}s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pids_file(state: Path) -> Path:
    return state / "pids.json"


def read_pids(state: Path) -> dict[str, int | None]:
    try:
        return json.loads(_pids_file(state).read_text())
    except (OSError, ValueError):
        return {}


def is_up(state: Path | None = None) -> bool:
    pids = read_pids(state or default_state_dir())
    return bool(pids) and all(_alive(pids.get(d)) for d in ("slurmctld", "slurmd"))


def _node_ready() -> bool:
    r = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in r.stdout.split())


def start(state: Path | None = None, log=print) -> dict[str, int | None]:
    """Bring the cluster up (idempotent); returns the PIDs of the daemons it started (None: reused).
    If it fails half-way, it stops what it started before raising."""
    state = Path(state or default_state_dir()).resolve()
    try:
        return _start(state, log)
    except Unavailable:
        raise
    except RuntimeError:
        stop(state, log=lambda *_: None)
        raise


def _start(state: Path, log) -> dict[str, int | None]:
    if os.geteuid() != 0:
        raise Unavailable("the local Slurm cluster needs root")
    if missing := missing_binaries():
        raise Unavailable(f"not installed: {', '.join(missing)} (run `python scripts/slurm_local.py install`)")
    if is_up(state):
        _wait(_node_ready, 40, "the node of the running cluster", [state / "slurmd.log", state / "slurmctld.log"])
        return read_pids(state)
    for d in ("slurmctld", "slurmd"):
        if _running(d):
            raise Unavailable(f"a {d} not started by scripts/slurm_local.py is running (PIDs {_running(d)})")

    host = socket.gethostname().split(".")[0]
    _write_ours(SLURM_CONF, slurm_conf(state, host, node_hardware()))
    _write_ours(GRES_CONF, f"{MARKER}\nNodeName={host} Name=gpu File={','.join(FAKE_GPU_FILES)}\n")
    for sub in ("slurmctld", "slurmd"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    pids: dict[str, int | None] = {"munged": None, "slurmctld": None, "slurmd": None}

    if not _munge_answers():
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(secrets.token_bytes(1024))
        for d in (MUNGE_RUN, Path("/var/lib/munge"), Path("/var/log/munge")):
            d.mkdir(parents=True, exist_ok=True)
        for p, mode in ((MUNGE_KEY.parent, 0o700), (MUNGE_KEY, 0o400), (MUNGE_RUN, 0o755),
                        (Path("/var/lib/munge"), 0o700), (Path("/var/log/munge"), 0o700)):
            shutil.chown(p, "munge", "munge")
            p.chmod(mode)
        pids["munged"] = _spawn([_which("munged"), "--foreground"], state / "munged.out", user="munge", group="munge", extra_groups=[])
        _pids_file(state).write_text(json.dumps(pids))
        _wait(_munge_answers, 20, "munged", [state / "munged.out"])

    pids["slurmctld"] = _spawn([_which("slurmctld"), "-D", "-c", "-i"], state / "slurmctld.out")
    _pids_file(state).write_text(json.dumps(pids))
    _wait(lambda: subprocess.run([_which("scontrol"), "ping"], capture_output=True, text=True).stdout.count("UP") > 0,
          30, "slurmctld", [state / "slurmctld.out", state / "slurmctld.log"])
    pids["slurmd"] = _spawn([_which("slurmd"), "-D"], state / "slurmd.out")
    _pids_file(state).write_text(json.dumps(pids))
    _wait(_node_ready, 40, "the node", [state / "slurmd.out", state / "slurmd.log", state / "slurmctld.log"])
    log(f"local Slurm cluster up: partition {PARTITION}, state in {state}, PIDs {pids}")
    return pids


def _terminate(pid: int, name: str, timeout: float = 15) -> None:
    if not _alive(pid) or _comm(pid) != name:
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < end + 5:
            time.sleep(0.2)
    try:  # reap it when it is our child (the test's own process)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(state: Path | None = None, log=print) -> None:
    """Cancel the cluster's jobs and stop the daemons that `start` started, by their PIDs."""
    state = Path(state or default_state_dir()).resolve()
    pids = read_pids(state)
    if _alive(pids.get("slurmctld")) and (scancel := _which("scancel")):
        subprocess.run([scancel, "--partition", PARTITION], capture_output=True, timeout=20)
        time.sleep(1)
    for name in DAEMONS:
        if pids.get(name):
            _terminate(pids[name], name)
    _pids_file(state).unlink(missing_ok=True)
    if not any(_running(d) for d in ("slurmctld", "slurmd")):
        _remove_ours(SLURM_CONF)
        _remove_ours(GRES_CONF)
    log(f"local Slurm cluster stopped (PIDs {pids})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["install", "start", "stop", "status"])
    ap.add_argument("--state-dir", type=Path, default=None, help="state, logs and PIDs (default: <tmp>/maskbench-slurm)")
    a = ap.parse_args(argv)
    try:
        if a.action == "install":
            install()
        elif a.action == "start":
            install()
            start(a.state_dir)
            print(f"run with: MASKBENCH_SLURM_PARTITION={PARTITION} snakemake --workflow-profile workflow/profiles/slurm"
                  " --slurm-status-command squeue ...")
        elif a.action == "stop":
            stop(a.state_dir)
        else:
            up = is_up(a.state_dir or default_state_dir())
            print(f"up, PIDs {read_pids(a.state_dir or default_state_dir())}" if up else "down")
            if up:
                subprocess.run([_which("sinfo")])
            return 0 if up else 3
    except Unavailable as e:
        print(f"slurm_local: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
