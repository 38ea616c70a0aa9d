"""Expand "kx" schedule names into Detectron2 solver settings.

*Rethinking ImageNet Pre-training* (He, Girshick, Dollar) compares initialisations across
schedules of k x 90k iterations at 16 images a batch, always dropping the LR by 10 at the
last 60k and the last 20k iterations. Written by hand, each such config is an arithmetic
trap (Detectron2's 9x config at 64 images reads MAX_ITER 202500, STEPS (187500, 197500),
BASE_LR 0.08); here the rule is applied once, from values stated at the reference batch,
so that the result is the same however often it is applied (the saved, resolved config can
be reloaded and resolved again).
"""

import re
from dataclasses import dataclass
from typing import Any, Collection, Dict, Optional, Tuple

from detectron2.config import CfgNode

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


#: The config key each resolved value is written to.
SCHEDULE_KEYS = {
    "max_iter": "SOLVER.MAX_ITER",
    "steps": "SOLVER.STEPS",
    "base_lr": "SOLVER.BASE_LR",
    "warmup_iters": "SOLVER.WARMUP_ITERS",
    "checkpoint_period": "SOLVER.CHECKPOINT_PERIOD",
    "eval_period": "TEST.EVAL_PERIOD",
}


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: what Detectron2's solver keys must hold."""

    max_iter: int
    steps: Tuple[int, ...]
    base_lr: float
    warmup_iters: int
    checkpoint_period: int
    eval_period: int

    def values(self) -> Dict[str, Any]:
        """``{config key: value}`` for every key the schedule sets."""
        return {key: getattr(self, field) for field, key in SCHEDULE_KEYS.items()}


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
    if len(steps) != len(offsets) or steps[0] < 1:
        raise ValueError(
            f"Schedule {name!r} at SOLVER.IMS_PER_BATCH {ims} is {max_iter} iterations, too short to "
            f"hold its {len(offsets)} LR drops (SOLVER.SCHEDULE.STEPS_FROM_END "
            f"{tuple(sched.STEPS_FROM_END)} of ITERS_PER_X {sched.ITERS_PER_X}): use a longer schedule."
        )
    # Periods are constant in images seen, but never longer than the run itself.
    return Schedule(
        max_iter=max_iter,
        steps=steps,
        base_lr=sched.BASE_LR * ims / ref,
        warmup_iters=min(_scaled(sched.WARMUP_ITERS, scale), max_iter),
        checkpoint_period=max(1, min(_scaled(sched.CHECKPOINT_PERIOD, scale), max_iter)),
        eval_period=min(_scaled(sched.EVAL_PERIOD, scale), max_iter) if sched.EVAL_PERIOD else 0,
    )


def apply_schedule(cfg: CfgNode, name: str = "", keep: Collection[str] = ()) -> Optional[Schedule]:
    """Write the schedule ``name`` (or ``SOLVER.SCHEDULE.NAME``) into ``cfg``'s solver keys.

    ``cfg`` must be mutable. Keys listed in ``keep`` (full names, e.g. ``SOLVER.MAX_ITER``:
    values the user set on the command line) are left as they are. Returns the resolved
    schedule, or None (``cfg`` left as written) when no schedule is named.
    """
    name = str(name or cfg.SOLVER.SCHEDULE.NAME).strip()
    if not name:
        return None
    schedule = resolve_schedule(cfg, name)
    cfg.SOLVER.SCHEDULE.NAME = name
    for key, value in schedule.values().items():
        if key not in keep:
            node, leaf = key.split(".")
            cfg[node][leaf] = value
    return schedule
