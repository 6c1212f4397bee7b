"""Put the example method package (examples/maskbench-curriculum) on a path as an installed
distribution: its package folder plus a ``*.dist-info`` with the entry points its pyproject declares
(what ``pip install`` writes), so tests and their Snakemake and DVC subprocesses find it through
``importlib.metadata`` without installing into the environment."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "maskbench-curriculum"


def write_dist_info(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> Path:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    return info


def install_example(site: Path, example: Path = EXAMPLE) -> Path:
    """Copy the example's package into ``site`` and write its dist-info; returns ``site``."""
    project = tomllib.loads((example / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    site.mkdir(parents=True, exist_ok=True)
    for pkg in (p for p in example.iterdir() if (p / "__init__.py").exists()):
        shutil.copytree(pkg, site / pkg.name, ignore=shutil.ignore_patterns("__pycache__"))
    write_dist_info(site, project["name"], project["version"], project["entry-points"])
    return site


def write_plugin(site: Path, dist: str, package: str, modules: dict[str, str],
                 entry_points: dict[str, str], version: str = "1.0") -> Path:
    """A throwaway plugin distribution: ``package`` with ``modules`` (name -> source) and the
    ``maskbench.methods`` entry points given."""
    pkg = site / package
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    for mod, src in modules.items():
        (pkg / f"{mod}.py").write_text(src, encoding="utf-8")
    write_dist_info(site, dist, version, {"maskbench.methods": entry_points})
    return site
