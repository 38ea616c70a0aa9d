"""Solver helpers: the *Rethinking ImageNet Pre-training* schedule rule."""

from .schedule import Schedule, apply_schedule, parse_schedule

__all__ = ["Schedule", "apply_schedule", "parse_schedule"]
