"""Layers: detpre's normalization registry (:mod:`.norm`)."""

from .norm import NORM_REGISTRY, SYNC_NORMS, get_norm, resolve_norms

__all__ = ["NORM_REGISTRY", "SYNC_NORMS", "get_norm", "resolve_norms"]
