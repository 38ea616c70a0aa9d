"""Checkpoints: the checkpointer (atomic saves, safe resume, stem inflation, load reports),
reading files, foreign-format conversion and cascade seeding."""

from .checkpointer import DetpreCheckpointer

__all__ = ["DetpreCheckpointer"]
