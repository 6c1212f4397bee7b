"""Pretraining methods (DESIGN §5). Importing this package registers every method."""
from . import metamae, none, r2mae, random_masking, sma, sma_r2, span  # noqa: F401  (registration)
from .base import MaskedAutoencoder, Method, MethodOutput
from .registry import REGISTRY, build_method, register
from .sma import select_mask

__all__ = ["REGISTRY", "MaskedAutoencoder", "Method", "MethodOutput", "build_method", "register",
           "select_mask"]
