"""Hardware and software of the machine that builds the report."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = {"torch": "torch", "rdkit": "rdkit", "snakemake": "snakemake", "sklearn": "scikit-learn",
            "pandas": "pandas", "numpy": "numpy", "matplotlib": "matplotlib"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpus() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop the report
        pass
    return []


def recorded_gpus(hardware_json: str | Path = "reports/pipeline_info/hardware.json") -> list[str] | None:
    """The GPUs the provenance step saw (it imports torch; the report does not); None if not recorded."""
    try:
        found = json.loads(Path(hardware_json).read_text(encoding="utf-8")).get("gpus")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(g) for g in found] if isinstance(found, list) else None


def hardware(hardware_json: str | Path = "reports/pipeline_info/hardware.json") -> dict[str, object]:
    """This machine's CPU, cores, RAM and OS; GPUs as recorded by the provenance step."""
    return {"cpu": cpu_model(), "cores": usable_cores(), "logical_cpus": os.cpu_count(), "ram_bytes": ram_bytes(),
            "gpus": recorded_gpus(hardware_json), "os": f"{platform.system()} {platform.release()}"}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name, dist in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
