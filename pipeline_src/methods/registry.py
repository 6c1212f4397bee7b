"""Config name -> method class, for built-in methods and methods from installed packages alike.

A method is an entry point of the group ``maskbench.methods``: ``name = "package.module:Class"``,
declared in the installing package's ``pyproject.toml``::

    [project.entry-points."maskbench.methods"]
    blockmask = "maskbench_blockmask.blockmask:BlockMasking"

The built-in methods are the same kind of entry point (:data:`BUILTIN`), found and loaded by the
same code: :func:`available_methods` lists both without importing anything (the plan checks
``methods_run`` against it while the Snakefile is parsed); :func:`method_class` imports one and
checks it is a :class:`~pipeline_src.methods.base.Method`. The entry point's name is the config
name and the class's ``name``.

:func:`method_code` is a method's code identity (its distribution, version and the sha256 of its
module files): part of an outside method's job settings, so editing the package reruns its jobs.

This module imports neither torch nor any method module until a class is loaded.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError

if TYPE_CHECKING:
    from ..batch import InputSpec
    from .base import Method

GROUP = "maskbench.methods"
BUILTIN_DIST = "maskbench"

# the built-in methods, as the entry points a package would declare
BUILTIN: dict[str, str] = {
    "none": "pipeline_src.methods.none:NoPretraining",
    "random": "pipeline_src.methods.random_masking:RandomMasking",
    "sma": "pipeline_src.methods.sma:SMA",
    "r2mae": "pipeline_src.methods.r2mae:R2MAE",
    "metamae": "pipeline_src.methods.metamae:MetaMAE",
    "sma_r2": "pipeline_src.methods.sma_r2:SMAR2",
    "span": "pipeline_src.methods.span:SpanMasking",
}


class MethodLoadError(ConfigError):
    """A method that cannot be found or loaded; the message names the entry point and the cause."""


@dataclass(frozen=True)
class MethodEntry:
    """One installed method: its config name, ``module:Class`` and the distribution declaring it."""
    name: str
    value: str
    dist: str                 # distribution name (BUILTIN_DIST for the built-ins)
    version: str | None

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST and self.value == BUILTIN.get(self.name)

    @property
    def module(self) -> str:
        return self.value.split(":", 1)[0].strip()

    @property
    def attr(self) -> str:
        return self.value.split(":", 1)[1].strip() if ":" in self.value else ""

    def where(self) -> str:
        what = "built-in method" if self.builtin else f"distribution {self.dist} {self.version or '(no version)'}"
        return f"entry point {self.name!r} = {self.value!r} ({GROUP}) of {what}"


def _builtin_version() -> str | None:
    try:
        return md.version(BUILTIN_DIST)
    except md.PackageNotFoundError:
        return None


def available_methods() -> dict[str, MethodEntry]:
    """Every installed method by config name: the built-ins, then the ``maskbench.methods`` entry
    points of installed distributions. Imports nothing. Two methods under one name fail, naming
    both entry points; maskbench declaring its own built-ins as entry points is not a conflict."""
    return dict(_scan(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _scan(path: tuple[str, ...]) -> dict[str, MethodEntry]:
    """:func:`available_methods` for one ``sys.path`` (what a process sees does not change otherwise)."""
    out: dict[str, MethodEntry] = {n: MethodEntry(n, v, BUILTIN_DIST, _builtin_version()) for n, v in BUILTIN.items()}
    seen: set[tuple[str, str, str]] = set()
    for ep in md.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
        version = ep.dist.version if ep.dist is not None else None
        entry = MethodEntry(ep.name, ep.value, dist, version)
        key = (entry.name, entry.value, entry.dist)
        if key in seen:   # the same distribution found twice on sys.path (e.g. an editable install)
            continue
        seen.add(key)
        have = out.get(ep.name)
        if have is not None and have.value == entry.value and (have.builtin or have.dist == entry.dist):
            continue
        if have is not None:
            raise MethodLoadError(f"two methods are installed under the name {ep.name!r}: {have.where()} and "
                                  f"{entry.where()}; uninstall one of the distributions or rename its entry point")
        out[ep.name] = entry
    return out


def refresh() -> None:
    """Forget the scanned entry points (after installing a package into a folder already on
    sys.path, within one process)."""
    _scan.cache_clear()
    importlib.invalidate_caches()


def method_entry(name: str) -> MethodEntry:
    methods = available_methods()
    if name not in methods:
        raise MethodLoadError(f"unknown method {name!r}; installed: {', '.join(sorted(methods))} (a method from "
                              f"another package is an entry point of the group {GROUP!r}: README, 'Add your own method')")
    return methods[name]


_LOADED: dict[MethodEntry, type] = {}


def load_entry(entry: MethodEntry) -> type["Method"]:
    """Import the entry's class and check it is a :class:`Method`; its ``name`` becomes the entry's."""
    if entry in _LOADED:
        return _LOADED[entry]
    from .base import Method

    if not entry.attr:
        raise MethodLoadError(f"{entry.where()}: the value must be 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(entry.module)
        for part in entry.attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:   # any error of the package's own code: report it with the entry point
        raise MethodLoadError(f"{entry.where()} failed to import: {type(e).__name__}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise MethodLoadError(f"{entry.where()}: {obj!r} is not a subclass of pipeline_src.methods.Method")
    own = obj.__dict__.get("name")
    if own and own != entry.name:
        raise MethodLoadError(f"{entry.where()}: class {obj.__qualname__} says name = {own!r}; the config name "
                              f"of a method is its entry point's name: drop the attribute or rename one of them")
    obj.name = entry.name
    _LOADED[entry] = obj
    return obj


def method_class(name: str) -> type["Method"]:
    return load_entry(method_entry(name))


def build_method(name: str, spec: "InputSpec", model_cfg: dict[str, Any],
                 method_cfg: dict[str, Any] | None = None) -> "Method":
    return method_class(name)(spec, model_cfg, dict(method_cfg or {}))


def display_name(cls: type["Method"]) -> str:
    """The class's own ``display_name`` (not one inherited from the method it builds on), else its name."""
    return str(cls.__dict__.get("display_name") or cls.name)


def describe(method: Any) -> dict[str, Any]:
    """What a checkpoint's meta.json records of its method (an instance: ``domain_agnostic`` may
    differ from the class's, e.g. with a sincos positional table)."""
    cls = type(method)
    try:
        code: dict[str, Any] | None = method_code(cls.name)
    except MethodLoadError:   # a class built directly (tests), not an installed method
        code = None
    return {"display_name": display_name(cls), "domain_agnostic": bool(getattr(method, "domain_agnostic", True)),
            "guided_masks": bool(getattr(cls, "guided_masks", False)), "method_code": code}


# --- code identity ------------------------------------------------------------------------------

def _module_origin(module: str) -> tuple[Path, Path]:
    """(file of ``module``, folder of its top-level package or module) without importing it."""
    top = module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ModuleNotFoundError(f"no module named {top!r}")
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        rest = module.split(".")[1:]
        base = root.joinpath(*rest)
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        return path, root
    if spec.origin is None:
        raise ModuleNotFoundError(f"module {top!r} has no file")
    return Path(spec.origin), Path(spec.origin)


def module_closure(path: Path) -> list[Path]:
    """A methods module and the sibling modules it imports (``from .x import``), transitively."""
    seen: list[Path] = []
    todo = [path]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                # from .x import y -> x; from . import x, y -> x, y
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                todo += [s for s in (p.parent / f"{n}.py" for n in names) if s.exists()]
    return sorted(seen)


def builtin_module_files(module: str) -> dict[str, Path]:
    """A built-in method's module and the method modules it builds on, by path relative to the
    folder holding ``pipeline_src``."""
    path, root = _module_origin(module)
    return {p.relative_to(root.parent).as_posix(): p for p in module_closure(path)}


def module_files(entry: MethodEntry) -> dict[str, Path]:
    """The source files of an outside method: every ``.py`` file of its top-level package (or its
    single module), by path relative to the folder holding the package."""
    try:
        path, root = _module_origin(entry.module)
    except (ImportError, ValueError) as e:
        raise MethodLoadError(f"{entry.where()}: cannot find its module: {e}") from e
    if not path.exists():
        raise MethodLoadError(f"{entry.where()}: module file {path} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return {p.relative_to(root.parent).as_posix(): p for p in files}


def method_code(name: str) -> dict[str, Any]:
    """The code identity of a method: distribution, version, entry point and the sha256 of each of
    its module files (for a built-in, its module and the method modules it imports)."""
    entry = method_entry(name)
    if entry.builtin:
        files = builtin_module_files(entry.module)
    else:
        files = module_files(entry)
    return {"distribution": entry.dist, "version": entry.version, "entry_point": f"{entry.name} = {entry.value}",
            "files": {rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in sorted(files.items())}}


def outside_code(name: str) -> dict[str, Any] | None:
    """:func:`method_code` for a method from another package; None for a built-in (whose code is
    the project's own, covered by its files)."""
    entry = method_entry(name)
    return None if entry.builtin else method_code(name)
