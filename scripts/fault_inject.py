"""Inject faults into real runs of the CI workflow and check that every recovery ends with the
same results as an undisturbed run.

Two scratch copies of the workflow (``Snakefile``, ``workflow/``, ``config/``, the fixtures and a
snapshot of ``pipeline_src``, so that edits to the checkout during the run change neither) run
``config/ci.yaml`` on the CPU:

* ``reference``: one undisturbed run (or ``--reference DIR``, a finished one to reuse);
* ``faulted``: the same run, into which faults are injected at random moments, ``--gap`` seconds
  apart on average. One run absorbs several faults; after a fault that stops Snakemake it is
  unlocked and restarted with ``--rerun-incomplete``, until every fault was injected and a run
  finishes with nothing left to do.

Fault kinds:

* ``kill_pretrain``: SIGKILL a running ``python -m pipeline_src pretrain`` job of this run;
* ``kill_snakemake``: SIGKILL the whole ``snakemake`` process and every job it started;
* ``remove_partial``: delete a half-written file — a temporary or staging file (``.*.tmp*``,
  ``.*.part``, ``.*.stage-*``) if one exists at that moment, else the newest file under
  ``data/`` that is a declared output being written or just written.

At the end the final results are compared with the reference: every result JSON's ``test`` and
``valid`` values, the report's tables (sections and columns holding wall times, throughput,
memory, dates or hosts ignored) and the tensors of every ``model.pt``. Printed: runs, faults by
kind, recoveries, mismatches and the jobs redone compared with the undisturbed run.

    python scripts/fault_inject.py --faults 20 --seed 0
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "workflow", "config", "tests/fixtures", "pipeline_src"]
KINDS = ("kill_pretrain", "kill_snakemake", "remove_partial")
TEMP_NAME = re.compile(r"^\..+(\.tmp|\.part|\.stage-|\.tmp-|\.extract-)")
JOB_START = re.compile(r"^\s*(?:local)?rule (\w+):\s*$", re.M)
# report parts that measure the machine, not the method
VOLATILE_SECTION = re.compile(r"environment|timing|provenance", re.I)
VOLATILE_COLUMN = re.compile(r"time|wall|sec|\(s\)|tokens/s|throughput|memory|\bmem|rss|mib|host|date|speed|"
                             r"gpu-h|cpu-h|hours", re.I)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# scratch copies and snakemake

def make_copy(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


OVERRIDE = "config/fault_inject_override.yaml"
CONFIGFILES = ["config/ci.yaml"]


def write_override(wd: Path, exclude_tasks: list[str]) -> None:
    """A config file over ci.yaml that leaves out ``exclude_tasks`` (written in the scratch copy)."""
    import yaml

    ci = yaml.safe_load((wd / "config/ci.yaml").read_text())
    domains = {name: {"tasks": [t for t in d["tasks"] if t not in exclude_tasks]} for name, d in ci["domains"].items()}
    (wd / OVERRIDE).write_text(yaml.safe_dump({"domains": domains}, sort_keys=False))


def snakemake_cmd(cores: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra, "--configfile", *CONFIGFILES]


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MASKBENCH_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"})
    return env


def start(wd: Path, cores: int, out_log: Path, *extra: str) -> subprocess.Popen:
    f = open(out_log, "ab")
    f.write(f"\n===== {' '.join(extra)} {time.strftime('%H:%M:%S')}\n".encode())
    f.flush()
    return subprocess.Popen(snakemake_cmd(cores, *extra), cwd=wd, stdout=f, stderr=subprocess.STDOUT,
                            env=job_env(), start_new_session=True)


def run_reference(wd: Path, cores: int, result: dict) -> None:
    t0 = time.time()
    p = start(wd, cores, wd / "snakemake.out")
    result["rc"] = p.wait()
    result["wall_s"] = time.time() - t0


def nothing_to_do(wd: Path, cores: int) -> bool:
    r = subprocess.run(snakemake_cmd(cores, "-n"), cwd=wd, capture_output=True, text=True, env=job_env())
    return r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def unlock(wd: Path, cores: int) -> None:
    subprocess.run(snakemake_cmd(cores, "--unlock"), cwd=wd, capture_output=True, env=job_env())


# ------------------------------------------------------------------------------------------
# processes of one run (descendants only: never touch another user's processes)

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pretrain_jobs(root_pid: int) -> list[int]:
    return [p for p in descendants(root_pid)
            if "-m pipeline_src pretrain" in cmdline(p) and not cmdline(p).startswith(("/bin/sh", "/usr/bin/bash", "bash"))]


def kill_tree(root_pid: int) -> None:
    pids = descendants(root_pid)
    for p in [root_pid, *pids]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------------------
# faults

def temp_files(wd: Path) -> list[Path]:
    out = []
    for base in ("data", "reports"):
        for dirpath, dirnames, filenames in os.walk(wd / base):
            for n in [*filenames, *dirnames]:
                if TEMP_NAME.match(n):
                    out.append(Path(dirpath) / n)
    return out


def recent_output(wd: Path, within_s: float = 5.0) -> Path | None:
    now = time.time()
    best, best_t = None, now - within_s
    for base in ("data/checkpoints", "data/results", "data/features", "data/processed", "reports"):
        for dirpath, _, filenames in os.walk(wd / base):
            for n in filenames:
                p = Path(dirpath) / n
                try:
                    t = p.stat().st_mtime
                except OSError:
                    continue
                if t > best_t:
                    best, best_t = p, t
    return best


def inject(kind: str, wd: Path, proc: subprocess.Popen, rng: random.Random, window_s: float) -> tuple[str, str] | None:
    """Try to inject ``kind`` within ``window_s``; returns (kind, what) or None if no chance came."""
    deadline = time.time() + window_s
    if kind == "kill_snakemake":
        kill_tree(proc.pid)
        proc.wait()
        return kind, "snakemake and its jobs"
    if kind == "kill_pretrain":
        while time.time() < deadline and proc.poll() is None:
            jobs = pretrain_jobs(proc.pid)
            if jobs:
                pid = rng.choice(jobs)
                time.sleep(rng.uniform(0.0, 4.0))  # at a random moment of the job's life
                what = cmdline(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                m = re.search(r"--corpus (\S+) --method (\S+)", what)
                return kind, f"pretrain {m.group(1)}/{m.group(2)}" if m else "pretrain"
            time.sleep(0.1)
        return None
    if kind == "remove_partial":
        while time.time() < deadline and proc.poll() is None:
            tmps = temp_files(wd)
            if tmps:
                p = rng.choice(tmps)
                try:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                except OSError:
                    continue
                return kind, f"temp {p.relative_to(wd)}"
            time.sleep(0.05)
        if proc.poll() is None:
            p = recent_output(wd)
            if p is not None:
                try:
                    p.unlink()
                except OSError:
                    return None
                return kind, f"output {p.relative_to(wd)}"
        return None
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------
# comparison

def result_values(wd: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((wd / "data/results").rglob("*.json")):
        r = json.loads(p.read_text())
        out[str(p.relative_to(wd))] = {k: r.get(k) for k in ("test", "valid")}
    return out


def report_tables(md: str) -> list[str]:
    """Table rows of the report, volatile sections and columns removed."""
    rows, section, header, drop = [], "", None, set()
    for line in md.splitlines():
        if line.startswith("#"):
            section, header = line, None
            continue
        if not line.startswith("|") or VOLATILE_SECTION.search(section):
            if not line.startswith("|"):
                header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.match(r"^:?-+:?$", cells[0] or "-") and all(re.match(r"^:?-*:?$", c) for c in cells):
            continue
        if header is None:
            header = cells
            drop = {i for i, c in enumerate(cells) if VOLATILE_COLUMN.search(c)}
        rows.append(f"{section} | " + " | ".join(c for i, c in enumerate(cells) if i not in drop))
    return rows


def tensor_hashes(wd: Path) -> dict[str, str]:
    import torch

    out = {}
    for p in sorted((wd / "data/checkpoints").rglob("model.pt")):
        blob = torch.load(p, map_location="cpu", weights_only=True)
        h = hashlib.sha256()
        for k in sorted(blob["state_dict"]):
            t = blob["state_dict"][k].contiguous().reshape(-1)
            h.update(k.encode() + str(t.dtype).encode() + t.view(torch.uint8).numpy().tobytes())
        out[str(p.relative_to(wd))] = h.hexdigest()
    return out


def data_files_differ(ref: Path, got: Path) -> list[str]:
    """Processed tables, qc, splits and frozen features that differ (or exist in one run only)."""
    import numpy as np
    import pyarrow.parquet as pq

    out = []
    for base in ("data/processed", "data/features"):
        names = {p.relative_to(ref) for p in (ref / base).rglob("*") if p.is_file() and not p.name.startswith(".")}
        names |= {p.relative_to(got) for p in (got / base).rglob("*") if p.is_file() and not p.name.startswith(".")}
        for rel in sorted(names):
            a, b = ref / rel, got / rel
            if not (a.exists() and b.exists()):
                out.append(f"{rel}: only in {'reference' if a.exists() else 'faulted run'}")
            elif rel.suffix == ".parquet":
                if not pq.read_table(a).equals(pq.read_table(b)):
                    out.append(f"{rel}: tables differ")
            elif rel.suffix == ".npz":
                x, y = np.load(a), np.load(b)
                if sorted(x.files) != sorted(y.files) or any(not np.array_equal(x[k], y[k]) for k in x.files):
                    out.append(f"{rel}: arrays differ")
            elif rel.suffix == ".json":
                if json.loads(a.read_text()) != json.loads(b.read_text()):
                    out.append(f"{rel}: differs")
    return out


def compare(ref: Path, got: Path) -> list[str]:
    problems = []
    a, b = result_values(ref), result_values(got)
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            problems.append(f"result {k}: {a.get(k)} vs {b.get(k)}")
    ra, rb = report_tables((ref / "reports/all.md").read_text()), report_tables((got / "reports/all.md").read_text())
    if ra != rb:
        diff = [x for x in rb if x not in ra][:5]
        problems.append(f"report tables differ ({len(ra)} vs {len(rb)} rows); e.g. {diff}")
    ta, tb = tensor_hashes(ref), tensor_hashes(got)
    for k in sorted(set(ta) | set(tb)):
        if ta.get(k) != tb.get(k):
            problems.append(f"weights {k} differ")
    problems += data_files_differ(ref, got)
    return problems


def failed_jobs(out_log: Path) -> str:
    text = out_log.read_text(errors="replace") if out_log.exists() else ""
    rules = re.findall(r"Error in rule (\w+):.*?\n\s*log: (\S+)", text, re.S)
    return "; ".join(f"rule {r} (log {lg})" for r, lg in rules[-3:]) or "no failed job found in the log"


def jobs_started(out_log: Path) -> Counter:
    return Counter(JOB_START.findall(out_log.read_text(errors="replace"))) if out_log.exists() else Counter()


# ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    ap.add_argument("--gap", type=float, default=60.0, help="mean seconds between faults (default 60)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--reference", type=Path, help="a finished undisturbed run to reuse")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {KINDS}")
    ap.add_argument("--max-restarts", type=int, default=200)
    ap.add_argument("--exclude-tasks", default="", help="comma-separated tasks to leave out of the CI config "
                    "(e.g. tasks whose jobs fail without any fault)")
    a = ap.parse_args(argv)
    exclude = [t for t in a.exclude_tasks.split(",") if t]
    if exclude:
        CONFIGFILES.append(OVERRIDE)
    rng = random.Random(a.seed)
    kinds = [k for k in a.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown fault kind {k!r}")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="maskbench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"scratch folder {work}")

    ref_result: dict = {}
    ref_thread = None
    if a.reference is not None:
        ref = a.reference
        if not (ref / "reports/all.md").exists():
            ap.error(f"{ref}: no reports/all.md: not a finished run")
    else:
        ref = make_copy(work / "reference")
        if exclude:
            write_override(ref, exclude)
        ref_thread = threading.Thread(target=run_reference, args=(ref, a.cores, ref_result), daemon=True)
        ref_thread.start()
        log("undisturbed reference run started")

    wd = make_copy(work / "faulted")
    if exclude:
        write_override(wd, exclude)
    out_log = wd / "snakemake.out"
    faults: list[tuple[str, str]] = []
    runs, restarts, recoveries, failed_runs = 0, 0, 0, 0
    pending_recovery = 0
    clean_failures = 0
    t0 = time.time()
    while True:
        runs += 1
        if ref_result.get("rc") not in (None, 0):
            print(f"the undisturbed reference run failed (exit status {ref_result['rc']}): "
                  f"{failed_jobs(ref / 'snakemake.out')}; see {ref}/snakemake.out")
            return 2
        proc = start(wd, a.cores, out_log, "--rerun-incomplete")
        killed = False
        faults_before = len(faults)
        while proc.poll() is None and len(faults) < a.faults:
            delay = rng.uniform(0.2, 1.8) * a.gap
            end = time.time() + delay
            while proc.poll() is None and time.time() < end:
                time.sleep(0.2)
            if proc.poll() is not None:
                break
            kind = rng.choice(kinds)
            got = inject(kind, wd, proc, rng, window_s=a.gap)
            if got is None:  # no pretrain job / partial file came: inject another kind
                others = [k for k in kinds if k != kind]
                if others:
                    got = inject(rng.choice(others), wd, proc, rng, window_s=a.gap / 2)
            if got is None:
                continue
            faults.append(got)
            pending_recovery += 1
            log(f"fault {len(faults)}/{a.faults}: {got[0]}: {got[1]}")
            if got[0] == "kill_snakemake":
                killed = True
                break
        rc = proc.wait()
        if killed or rc != 0:
            if not killed:
                failed_runs += 1
                log(f"run {runs} stopped with exit status {rc}; restarting")
                clean_failures = clean_failures + 1 if len(faults) == faults_before else 0
                if clean_failures >= 2:
                    print(f"runs failed twice in a row with no fault injected in them: "
                          f"{failed_jobs(out_log)}; a failure not caused by a fault. See {out_log}")
                    return 2
            restarts += 1
            if restarts > a.max_restarts:
                log("too many restarts; giving up")
                break
            unlock(wd, a.cores)
            continue
        # a clean exit: everything after the last faults was recovered
        clean_failures = 0
        recoveries += pending_recovery
        pending_recovery = 0
        if nothing_to_do(wd, a.cores):
            if len(faults) < a.faults:
                log(f"the workflow finished after {len(faults)} of {a.faults} faults; a smaller --gap fits more")
            break
        log("finished but work remains; running again")
    faulted_wall = time.time() - t0
    if ref_thread is not None:
        log("waiting for the reference run")
        ref_thread.join()
        if ref_result.get("rc") != 0:
            print(f"reference run failed (exit status {ref_result.get('rc')}); see {ref}/snakemake.out")
            return 2

    problems = compare(ref, wd)
    ref_jobs = jobs_started(ref / "snakemake.out")
    got_jobs = jobs_started(out_log)
    extra = got_jobs - ref_jobs
    by_kind = Counter(k for k, _ in faults)
    print("fault injection on config/ci.yaml (CPU)")
    print(f"  command: python scripts/fault_inject.py --faults {a.faults} --seed {a.seed} --gap {a.gap:g}"
          + (f" --exclude-tasks {a.exclude_tasks}" if exclude else ""))
    print(f"  scratch folder: {work}")
    print(f"  snakemake runs (faulted copy): {runs} (restarts after a fault: {restarts}, of which runs that "
          f"stopped on a failed job: {failed_runs})")
    print(f"  faults injected: {len(faults)} — " + ", ".join(f"{k} {by_kind.get(k, 0)}" for k in KINDS))
    for i, (k, what) in enumerate(faults, 1):
        print(f"    {i:>2}. {k}: {what}")
    print(f"  recoveries (faults followed by a run that completed): {recoveries}/{len(faults)}")
    print(f"  final state: {'nothing left to do' if nothing_to_do(wd, a.cores) else 'INCOMPLETE'}")
    print(f"  jobs started: undisturbed {sum(ref_jobs.values())}, faulted {sum(got_jobs.values())} "
          f"(redone: {sum(extra.values())}: " + ", ".join(f"{r} {n}" for r, n in sorted(extra.items())) + ")")
    if ref_result:
        print(f"  wall time: undisturbed {ref_result['wall_s']:.0f} s, faulted {faulted_wall:.0f} s")
    print(f"  compared: {len(result_values(ref))} result files (test/valid), report tables, "
          f"{len(tensor_hashes(ref))} model.pt weight sets, processed tables/splits/qc and features")
    print(f"  mismatches: {len(problems)}")
    for p in problems[:30]:
        print(f"    - {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
