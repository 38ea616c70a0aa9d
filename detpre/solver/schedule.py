"""Expand "kx" schedule names into Detectron2 solver settings.

*Rethinking ImageNet Pre-training* (He, Girshick, Dollar) compares initialisations across
schedules of k x 90k iterations at 16 images a batch, always dropping the LR by 10 at the
last 60k and the last 20k iterations. Written by hand, each such config is an arithmetic
trap (Detectron2's 9x config at 64 images reads MAX_ITER 202500, STEPS (187500, 197500),
BASE_LR 0.08); here the rule is applied once, from values stated at the reference batch,
so that the result is the same however often it is applied (the saved, resolved config can
be reloaded and resolved again).
"""
import logging
import re
from dataclasses import dataclass
from typing import Tuple

from detectron2.config import CfgNode

logger = logging.getLogger(__name__)

_SCHEDULE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*x\s*$", re.IGNORECASE)


def parse_schedule(name: str) -> float:
    """Return the multiplier k of a schedule name such as "6x", "0.5x" or "2.5x"."""
    match = _SCHEDULE_RE.match(str(name))
    if match is None:
        raise ValueError(
            f"Unknown schedule {name!r} (SOLVER.SCHEDULE.NAME / --schedule): expected a multiple of "
            "the 1x schedule such as '1x', '6x', '0.5x' or '2.5x'."
        )
    k = float(match.group(1))
    if k <= 0:
        raise ValueError(f"Schedule {name!r} must be a positive multiple of 1x.")
    return k


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: what Detectron2's solver keys must hold."""

    max_iter: int
    steps: Tuple[int, ...]
    base_lr: float
    warmup_iters: int
    checkpoint_period: int
    eval_period: int


def _scaled(iters: float, scale: float) -> int:
    return int(round(iters * scale))


def resolve_schedule(cfg: CfgNode, name: str) -> Schedule:
    """Compute the solver settings of schedule ``name`` for ``cfg.SOLVER.IMS_PER_BATCH``.

    Lengths are given at ``SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH`` images and scale by
    ``reference / IMS_PER_BATCH`` (the same number of images is seen); the LR scales by the
    inverse (the linear scaling rule). For k >= 1 the drops sit at the last STEPS_FROM_END
    iterations, as in the paper. A schedule shorter than those offsets (k < 1 with the
    defaults) has no "last 60k", so its drops keep the places they have in the 1x schedule,
    as fractions of the run (1/3 and 7/9 with the defaults).
    """
    sched = cfg.SOLVER.SCHEDULE
    k = parse_schedule(name)
    ims = cfg.SOLVER.IMS_PER_BATCH
    ref = sched.REFERENCE_IMS_PER_BATCH
    if ims <= 0 or ref <= 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({ims}) and SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH ({ref}) "
            "must be positive to resolve a schedule."
        )
    offsets = sorted((int(s) for s in sched.STEPS_FROM_END), reverse=True)
    if any(o <= 0 or o >= sched.ITERS_PER_X for o in offsets):
        raise ValueError(
            f"SOLVER.SCHEDULE.STEPS_FROM_END {tuple(sched.STEPS_FROM_END)} must lie inside "
            f"(0, ITERS_PER_X={sched.ITERS_PER_X})."
        )
    scale = ref / ims
    ref_iters = k * sched.ITERS_PER_X
    if ref_iters > max(offsets):
        ref_steps = [ref_iters - o for o in offsets]
    else:
        ref_steps = [ref_iters * (sched.ITERS_PER_X - o) / sched.ITERS_PER_X for o in offsets]
    max_iter = _scaled(ref_iters, scale)
    steps = tuple(sorted({min(max(1, _scaled(s, scale)), max_iter - 1) for s in ref_steps}))
    # Periods are constant in images seen, but never longer than the run itself.
    return Schedule(
        max_iter=max_iter,
        steps=steps,
        base_lr=sched.BASE_LR * ims / ref,
        warmup_iters=min(_scaled(sched.WARMUP_ITERS, scale), max_iter),
        checkpoint_period=max(1, min(_scaled(sched.CHECKPOINT_PERIOD, scale), max_iter)),
        eval_period=min(_scaled(sched.EVAL_PERIOD, scale), max_iter) if sched.EVAL_PERIOD else 0,
    )


def apply_schedule(cfg: CfgNode, name: str = "") -> CfgNode:
    """Write the schedule ``name`` (or ``SOLVER.SCHEDULE.NAME``) into ``cfg``'s solver keys.

    ``cfg`` must be mutable; it is returned for chaining. With no schedule name, ``cfg`` is
    left as written.
    """
    name = name or cfg.SOLVER.SCHEDULE.NAME
    if not name:
        return cfg
    s = resolve_schedule(cfg, name)
    cfg.SOLVER.SCHEDULE.NAME = str(name).strip()
    cfg.SOLVER.MAX_ITER = s.max_iter
    cfg.SOLVER.STEPS = s.steps
    cfg.SOLVER.BASE_LR = s.base_lr
    cfg.SOLVER.WARMUP_ITERS = s.warmup_iters
    cfg.SOLVER.CHECKPOINT_PERIOD = s.checkpoint_period
    cfg.TEST.EVAL_PERIOD = s.eval_period
    logger.info(
        "Schedule %s at %d images/batch: MAX_ITER %d, STEPS %s, BASE_LR %g, WARMUP_ITERS %d",
        name, cfg.SOLVER.IMS_PER_BATCH, s.max_iter, s.steps, s.base_lr, s.warmup_iters,
    )
    return cfg
