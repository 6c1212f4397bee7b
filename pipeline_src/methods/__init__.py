"""Pretraining methods (DESIGN §5): one module per method; :mod:`.registry` maps config names to
classes, for the built-ins and for methods from installed packages (entry points of the group
``maskbench.methods``) alike.

Importing this package is cheap (no torch): the names below load on first use, so the plan can
list the installed methods while the Snakefile is parsed.
"""
from __future__ import annotations

import importlib
from typing import Any

from .registry import (BUILTIN, GROUP, MethodEntry, MethodLoadError, available_methods, build_method, describe,
                       display_name, method_class, method_code)

_LAZY = {"MaskedAutoencoder": ".base", "Method": ".base", "MethodOutput": ".base", "select_mask": ".sma"}

__all__ = ["BUILTIN", "GROUP", "MaskedAutoencoder", "Method", "MethodEntry", "MethodLoadError", "MethodOutput",
           "available_methods", "build_method", "describe", "display_name", "method_class", "method_code",
           "select_mask"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
