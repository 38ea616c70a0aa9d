"""Checkpoint helpers: atomic saves, foreign-format conversion, cascade seeding."""

from .inflate import DetpreCheckpointer  # noqa: F401  (stem inflation at load, atomic saves)
