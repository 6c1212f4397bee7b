"""One GPU per training job when several run at once on a machine.

Snakemake's ``--resources gpu=N`` only counts jobs; it does not tell a job which device to use.
:func:`gpu_slot` gives each job its own: it takes an exclusive ``flock`` on
``<lock_dir>/gpu<id>.lock`` for the first free device and sets ``CUDA_VISIBLE_DEVICES`` to that
device's id before CUDA is initialized, so the job sees exactly one GPU (``cuda:0``). The lock is
released when the block ends, and by the operating system when the process dies, however it dies
(no stale lock after a SIGKILL). Where there is no GPU it yields ``None`` and changes nothing.

Environment:

* ``MASKBENCH_GPU_COUNT``: the number of GPUs (simulation, clusters); default: counted without
  initializing CUDA in this process (NVML, else a child process).
* ``CUDA_VISIBLE_DEVICES``: when set, the slots are the devices it lists (ids or UUIDs), so jobs
  restricted to a subset of the GPUs share only those; ``MASKBENCH_GPU_COUNT`` then caps the list.
* ``MASKBENCH_GPU_LOCK_DIR``: the lock folder, shared by every job of the machine; it must be on a
  local file system (``flock`` over NFS is not reliable). Default: a per-user folder under the
  system temp dir.
* ``MASKBENCH_GPU_WAIT_S``: how long to wait for a free slot before failing (default one day).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

COUNT_ENV = "MASKBENCH_GPU_COUNT"
LOCK_DIR_ENV = "MASKBENCH_GPU_LOCK_DIR"
WAIT_ENV = "MASKBENCH_GPU_WAIT_S"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
DEFAULT_WAIT_S = 24 * 3600.0


class GpuSlotTimeout(TimeoutError):
    """Every GPU slot stayed busy for longer than the allowed wait."""


def default_lock_dir() -> Path:
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return Path(env)
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USER", "user")
    return Path(tempfile.gettempdir()) / f"maskbench-gpu-locks-{user}"


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def count_gpus() -> int:
    """The number of GPUs on this machine (before ``CUDA_VISIBLE_DEVICES``), without creating a
    CUDA context here: ``$MASKBENCH_GPU_COUNT``, else NVML (through torch), else a child process."""
    env = os.environ.get(COUNT_ENV)
    if env not in (None, ""):
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"${COUNT_ENV} must be a whole number, got {env!r}") from None
        if n < 0:
            raise ValueError(f"${COUNT_ENV} must be >= 0, got {n}")
        return n
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return 0  # a CPU-only build of torch
    nvml = getattr(torch.cuda, "_device_count_nvml", None)
    if nvml is not None:
        try:
            n = int(nvml())
        except Exception:
            n = -1
        if n >= 0:
            return n
    # torch.cuda.device_count() would initialize the CUDA runtime of this process, after which a
    # new CUDA_VISIBLE_DEVICES is ignored: ask a child process instead
    env_child = {k: v for k, v in os.environ.items() if k != VISIBLE_ENV}
    try:
        r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, timeout=120, env=env_child)
        return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def candidate_devices(n_devices: int | None = None) -> list[str]:
    """The physical device ids a job may take: the ``CUDA_VISIBLE_DEVICES`` list when it is set
    (capped by ``n_devices`` / ``$MASKBENCH_GPU_COUNT`` when given), else ``0 .. n-1``."""
    visible = os.environ.get(VISIBLE_ENV)
    if n_devices is None and os.environ.get(COUNT_ENV) not in (None, ""):
        n_devices = count_gpus()
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        # CUDA stops at the first invalid entry (e.g. -1): so do we
        for i, v in enumerate(ids):
            if v.lstrip("-").isdigit() and int(v) < 0:
                ids = ids[:i]
                break
        return ids if n_devices is None else ids[:n_devices]
    n = count_gpus() if n_devices is None else int(n_devices)
    return [str(i) for i in range(n)]


def _lock_name(device_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device_id)
    return f"gpu{safe}.lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    # who holds it, for a person looking at the lock folder (the lock itself is the flock)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    return fd


def _holders(lock_dir: Path, ids: list[str]) -> str:
    out = []
    for d in ids:
        try:
            text = (lock_dir / _lock_name(d)).read_text().strip()
        except OSError:
            text = "?"
        out.append(f"gpu {d}: {text or '?'}")
    return "; ".join(out)


@contextlib.contextmanager
def gpu_slot(n_devices: int | None = None, lock_dir: str | Path | None = None, timeout_s: float | None = None,
             poll_s: float = 0.5, log=None) -> Iterator[int | str | None]:
    """Hold one GPU for the duration of the block; yield its physical id (an ``int``, or the
    ``CUDA_VISIBLE_DEVICES`` entry as given when it is not a number, e.g. a UUID), or ``None``
    where there is no GPU.

    Inside the block ``CUDA_VISIBLE_DEVICES`` names only that device (restored afterwards). When
    every slot is taken it waits, polling every ``poll_s`` seconds, for up to ``timeout_s``
    (default ``$MASKBENCH_GPU_WAIT_S``, else one day), then raises :class:`GpuSlotTimeout`.
    """
    log = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
    ids = candidate_devices(n_devices)
    if not ids:
        yield None
        return
    if _cuda_initialized():
        raise RuntimeError("gpu_slot() must be entered before CUDA is initialized in this process "
                           "(CUDA_VISIBLE_DEVICES is read only once)")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if timeout_s is None:
        timeout_s = float(os.environ.get(WAIT_ENV) or DEFAULT_WAIT_S)
    deadline = time.monotonic() + timeout_s
    fd, chosen, waited = None, None, False
    while True:
        for d in ids:
            fd = _try_lock(lock_dir / _lock_name(d))
            if fd is not None:
                chosen = d
                break
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise GpuSlotTimeout(f"no free GPU after {timeout_s:.0f} s: all {len(ids)} slots in {lock_dir} are held "
                                 f"({_holders(lock_dir, ids)}); raise ${WAIT_ENV} or lower --resources gpu=")
        if not waited:
            log(f"gpu_slot: all {len(ids)} GPU slots in {lock_dir} are busy ({_holders(lock_dir, ids)}); "
                f"waiting up to {timeout_s:.0f} s")
            waited = True
        time.sleep(poll_s)
    previous = os.environ.get(VISIBLE_ENV)
    os.environ[VISIBLE_ENV] = chosen
    log(f"gpu_slot: using GPU {chosen} (lock {lock_dir / _lock_name(chosen)})")
    try:
        yield int(chosen) if chosen.isdigit() else chosen
    finally:
        if previous is None:
            os.environ.pop(VISIBLE_ENV, None)
        else:
            os.environ[VISIBLE_ENV] = previous
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def job_slot(requested_device: str | None = None) -> contextlib.AbstractContextManager:
    """The GPU slot a training command holds for its whole run (:func:`gpu_slot`), unless the device
    was chosen by hand (``--device`` or ``$MASKBENCH_DEVICE``) or the command runs under
    ``torchrun`` with several ranks (each rank uses ``cuda:LOCAL_RANK``): then no slot, nothing set."""
    if requested_device or os.environ.get("MASKBENCH_DEVICE"):
        return contextlib.nullcontext(None)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return contextlib.nullcontext(None)
    except ValueError:
        pass
    return gpu_slot()
