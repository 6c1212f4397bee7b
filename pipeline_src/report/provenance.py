"""``python -m pipeline_src provenance``: what produced a run -> ``reports/pipeline_info/``.

Files written (each atomically):

- ``software_versions.yaml``: Python, torch (+ the CUDA it was built for, if any), RDKit, Snakemake,
  DVC, numpy, pandas, scikit-learn and a few more, and under ``methods`` each method of the run:
  its distribution, version, entry point and the sha256 of its module files;
- ``git.json``: the commit of the working tree and whether tracked files differ from it;
- ``config.yaml``: byte copy of the effective run config (the file every rule read) and
  ``config_hash.json`` with its sha256 and the settings hash used in the report;
- ``hardware.json``: CPU model, usable cores, RAM, GPUs, OS.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_bytes_atomic

# name in the file -> distribution name
DISTRIBUTIONS = {
    "torch": "torch", "rdkit": "rdkit", "snakemake": "snakemake", "dvc": "dvc", "numpy": "numpy",
    "pandas": "pandas", "scikit-learn": "scikit-learn", "pyarrow": "pyarrow", "matplotlib": "matplotlib",
    "scipy": "scipy",
}
OUT_FILES = ("software_versions.yaml", "git.json", "config.yaml", "config_hash.json", "hardware.json")


def package_versions() -> dict[str, str | None]:
    """Installed versions from the package metadata (no imports; None when not installed)."""
    out: dict[str, str | None] = {}
    for name, dist in DISTRIBUTIONS.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cuda_info() -> dict[str, Any]:
    """The CUDA torch was built with and whether a device is usable (None values without CUDA)."""
    info: dict[str, Any] = {"built_with": None, "available": False, "cudnn": None, "device_count": 0}
    try:
        import torch
    except Exception:  # no torch, or a broken install: say so, do not fail the run
        return info
    info["built_with"] = getattr(torch.version, "cuda", None)
    try:
        info["available"] = bool(torch.cuda.is_available())
        if info["available"]:
            info["device_count"] = torch.cuda.device_count()
            info["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        info["available"] = False
    return info


def software_versions(with_cuda: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "python_implementation": platform.python_implementation()}
    out.update(package_versions())
    if with_cuda:
        out["cuda"] = cuda_info()
    return out


def method_versions(config_path: str | Path) -> dict[str, Any]:
    """The code identity of every method in the run config's ``methods_run`` (a method from another
    package: its distribution, version and module files). Reads metadata and files, imports nothing."""
    from ..methods.registry import MethodLoadError, method_code

    cfg = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    out: dict[str, Any] = {}
    for m in cfg.get("methods_run", []):
        try:
            out[m] = method_code(m)
        except MethodLoadError as e:
            out[m] = {"error": str(e)}
    return out


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def git_info(root: str | Path = ".") -> dict[str, Any]:
    """``commit`` (HEAD) and ``dirty`` (tracked files differ from HEAD); None for both, with
    ``error``, outside a git work tree or without git."""
    root = Path(root)
    try:
        commit = _git(["rev-parse", "HEAD"], root).strip()
        status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "dirty": None, "error": f"{type(e).__name__}: not a git work tree or no commit"}
    try:
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], root).strip()
    except (OSError, subprocess.SubprocessError):
        branch = None
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "branch": branch, "changed_files": changed[:100]}


def git_commit(root: str | Path = ".") -> str | None:
    return git_info(root)["commit"]


def head_commit(root: str | Path = ".") -> str | None:
    """HEAD's commit read from the ``.git`` files (no ``git`` process, nothing written), so the
    workflow can name it while it is parsed; None outside a repository or before the first commit.
    Follows a worktree's ``gitdir:`` file, a symbolic HEAD and ``packed-refs``."""
    root = Path(root).resolve()
    dot = next((d / ".git" for d in (root, *root.parents) if (d / ".git").exists()), None)
    if dot is None:
        return None
    try:
        gitdir = dot
        if dot.is_file():                                   # worktree / submodule: "gitdir: <path>"
            gitdir = (dot.parent / dot.read_text().split(":", 1)[1].strip()).resolve()
        common = gitdir
        if (gitdir / "commondir").is_file():                # a worktree's refs live in the main repo
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None                             # detached HEAD
        ref = head.split(":", 1)[1].strip()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except (OSError, IndexError, ValueError):
        return None
    return None


def hardware_info() -> dict[str, Any]:
    from .environment import cpu_model, gpus, ram_bytes, usable_cores

    ram = ram_bytes()
    return {"cpu": cpu_model(), "cores": usable_cores(), "logical_cpus": os.cpu_count(), "ram_bytes": ram,
            "ram_gib": None if ram is None else round(ram / 2**30, 2), "gpus": gpus(), "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}"}


def config_digest(config_path: str | Path) -> dict[str, Any]:
    """sha256 of the effective config's bytes and the settings hash of its content (as in the report)."""
    from ..config import config_hash

    raw = Path(config_path).read_bytes()
    return {"sha256": hashlib.sha256(raw).hexdigest(), "settings_hash": config_hash(yaml.safe_load(raw)),
            "source": Path(config_path).as_posix() if not Path(config_path).is_absolute() else Path(config_path).name}


def _dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")


def write_pipeline_info(config_path: str | Path, out_dir: str | Path = "reports/pipeline_info",
                        repo_root: str | Path = ".") -> dict[str, Path]:
    """Write every provenance file under ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUT_FILES}
    versions = {**software_versions(), "methods": method_versions(config_path)}
    write_bytes_atomic(paths["software_versions.yaml"], yaml.safe_dump(versions, sort_keys=False).encode("utf-8"))
    write_bytes_atomic(paths["git.json"], _dump_json(git_info(repo_root)))
    write_bytes_atomic(paths["config.yaml"], Path(config_path).read_bytes())
    write_bytes_atomic(paths["config_hash.json"], _dump_json(config_digest(config_path)))
    write_bytes_atomic(paths["hardware.json"], _dump_json(hardware_info()))
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the effective run config (the file the rules read)")
    p.add_argument("--out-dir", default="reports/pipeline_info")
    p.add_argument("--repo", default=".", help="git work tree whose commit is recorded")


def main_from_args(a: argparse.Namespace) -> None:
    write_pipeline_info(a.config, a.out_dir, a.repo)
