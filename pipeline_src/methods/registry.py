"""Config name -> method class. A new method is one new module plus ``@register("name")``."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..batch import InputSpec
from .base import Method

REGISTRY: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])


def register(name: str) -> Callable[[M], M]:
    def deco(cls: M) -> M:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return deco


def build_method(name: str, spec: InputSpec, model_cfg: dict[str, Any],
                 method_cfg: dict[str, Any] | None = None) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](spec, model_cfg, dict(method_cfg or {}))
