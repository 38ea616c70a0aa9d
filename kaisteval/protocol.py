"""The KAIST evaluation protocol: its constants, settings and ground-truth filtering.

Every constant here is the one of ``kaist_eval_full.m`` + ``bbGt.m`` of the KAIST MATLAB
wrapper (Li-Chengyang/MSDS-RCNN, ``lib/datasets/KAISTdevkit-matlab-wrapper/``; the same
files ship with CalayZhou/MBNet's ``KAISTdevkit-matlab-wrapper/``), which is Piotr Dollar's
toolbox ``detector/bbGt.m`` (pdollar/toolbox) plus KAIST's ``vType`` occlusion filter:

* ``run_exp``: ``thr = .5``, ``mul = 0``, ``ref = 10.^(-2:.25:0)``,
  ``pLoad = {'lbls',{'person'}, 'ilbls',{'people','person?','cyclist'}, 'hRng',hr,
  'vType',occ, 'xRng',[5 635], 'yRng',[5 507]}``;
* ``exps``: the nine settings of :data:`SETTINGS` (name, image subset, height range,
  occlusion levels);
* ``bbGt>bbLoad``: objects whose label is in neither ``lbls`` nor ``ilbls`` are dropped;
  an object is *ignored* when its file says so, its label is in ``ilbls``, its left or
  right edge (``x``, ``x+w``) is outside ``xRng``, its top or bottom edge outside ``yRng``,
  its height outside ``hRng`` (ranges inclusive at both ends) or its occlusion level is
  not in ``vType`` (``occ = 2^occ`` tested with ``bitand``: 0 none, 1 partial, 2 heavy).
  A non-zero angle replaces the box by the extent of its inscribed ellipse (``bbExtent``,
  ``ellipse = 1``) after filtering, which uses the unrotated box.

Unlike the Caltech ``dbEval.m``, ``kaist_eval_full.m`` neither resizes detections to a
fixed aspect ratio (``bbApply('resize', ..., .41)``) nor drops detections outside the
height range ``hr/1.25 .. hr*1.25``: every detection of the result file is evaluated as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Dict, Sequence, Tuple

import numpy as np

from .bbgt import BBGTArrays, BBGTObject, objects_to_arrays

__all__ = [
    "IOU_THRESHOLD",
    "REF_FPPI",
    "LABELS",
    "IGNORE_LABELS",
    "X_RANGE",
    "Y_RANGE",
    "OCCLUSION_LEVELS",
    "Setting",
    "SETTINGS",
    "GroundTruth",
    "settings_by_name",
]

IOU_THRESHOLD = 0.5
#: The nine FPPI points at which the miss rate is sampled: MATLAB's ``10.^(-2:.25:0)``, each
#: the double nearest to 10^x. The colon operator gives the exponents exactly and MATLAB's
#: power rounds correctly (``10.^-1`` is 0.1); ``10.0 ** np.linspace(-2, 0, 9)`` does not
#: here (0.09999999999999999 for 10^-1 on NumPy's vectorised path): at 10 frames one false
#: positive is then FPPI 0.1 > ref, and MR moves by points. Decimal arithmetic (28 digits,
#: then one rounding to a double) gives the exact values on every machine.
REF_FPPI = np.array([float(Decimal(10) ** (Decimal(k) / 4 - 2)) for k in range(9)])
LABELS = ("person",)
IGNORE_LABELS = ("people", "person?", "cyclist")
X_RANGE = (5.0, 635.0)
Y_RANGE = (5.0, 507.0)
OCCLUSION_LEVELS = {"none": 0, "partial": 1, "heavy": 2}


@dataclass(frozen=True)
class Setting:
    """One experiment of ``kaist_eval_full.m``: which frames and which persons count.

    ``key`` is the short name of its MR in summaries and in Detectron2's results
    (``kaist/MR_all`` in ``metrics.json``), as papers tabulate them. A setting added to
    :data:`SETTINGS` is evaluated and reported everywhere with no other change.
    """

    name: str
    key: str
    subset: str  # "all", "day" or "night"
    height: Tuple[float, float]
    occlusion: Tuple[str, ...]

    @property
    def gt_key(self) -> Tuple[Tuple[float, float], Tuple[str, ...]]:
        """Settings sharing this key share the per-image matching (only the frames differ)."""
        return (self.height, self.occlusion)


_INF = float("inf")
SETTINGS: Tuple[Setting, ...] = (
    Setting("Reasonable-all", "MR_all", "all", (55.0, _INF), ("none", "partial")),
    Setting("Reasonable-day", "MR_day", "day", (55.0, _INF), ("none", "partial")),
    Setting("Reasonable-night", "MR_night", "night", (55.0, _INF), ("none", "partial")),
    Setting("Scale=near", "MR_near", "all", (115.0, _INF), ("none",)),
    Setting("Scale=medium", "MR_medium", "all", (45.0, 115.0), ("none",)),
    Setting("Scale=far", "MR_far", "all", (1.0, 45.0), ("none",)),
    Setting("Occ=none", "MR_occ_none", "all", (1.0, _INF), ("none",)),
    Setting("Occ=partial", "MR_occ_partial", "all", (1.0, _INF), ("partial",)),
    Setting("Occ=heavy", "MR_occ_heavy", "all", (1.0, _INF), ("heavy",)),
)


def _ellipse_extent(boxes: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Axis-aligned extent of the ellipse inscribed in each box rotated by ``angle`` degrees."""
    out = boxes.copy()
    rot = angle != 0
    if not rot.any():
        return out
    x, y, w, h = boxes[rot].T
    theta = np.deg2rad(angle[rot] - 90.0)
    a, b = h / 2.0, w / 2.0
    rx = np.sqrt((a * np.cos(theta)) ** 2 + (b * np.sin(theta)) ** 2)
    ry = np.sqrt((a * np.sin(theta)) ** 2 + (b * np.cos(theta)) ** 2)
    cx, cy = x + w / 2.0, y + h / 2.0
    out[rot] = np.stack([cx - rx, cy - ry, 2 * rx, 2 * ry], axis=1)
    return out


class GroundTruth:
    """The annotated objects of an ordered list of frames, as flat column arrays.

    Only objects labelled in ``LABELS`` or ``IGNORE_LABELS`` are kept (``bbLoad``);
    ``frame`` is the 0-based position of the object's frame in the list.
    """

    def __init__(self, n_frames: int, frame: np.ndarray, objects: BBGTArrays):
        keep = np.isin(objects.labels, LABELS + IGNORE_LABELS)
        self.n_frames = n_frames
        self.frame = np.asarray(frame, dtype=np.int64)[keep]
        self.raw_boxes = objects.boxes[keep]
        self.occlusion = objects.occlusion[keep]
        # Ignored whatever the setting: marked so in the file, or an ignore label.
        self.always_ignored = objects.ignore[keep] | np.isin(objects.labels[keep], IGNORE_LABELS)
        self.boxes = _ellipse_extent(self.raw_boxes, np.mod(objects.angle[keep], 360.0))

    @classmethod
    def from_objects(cls, per_frame: Sequence[Sequence[BBGTObject]]) -> "GroundTruth":
        """From one list of objects per frame (e.g. built from Detectron2 dataset dicts)."""
        frame = np.repeat(np.arange(len(per_frame)), [len(objs) for objs in per_frame])
        return cls(len(per_frame), frame, objects_to_arrays([o for objs in per_frame for o in objs]))

    def __len__(self) -> int:
        return len(self.frame)

    def ignored(self, setting: Setting) -> np.ndarray:
        """``bbLoad``'s ignore flag of every object under ``setting``."""
        x, y, w, h = self.raw_boxes.T
        x0, x1 = X_RANGE
        y0, y1 = Y_RANGE
        h0, h1 = setting.height
        allowed = [OCCLUSION_LEVELS[o] for o in setting.occlusion]
        return (
            self.always_ignored
            | (x < x0)
            | (x > x1)
            | (x + w < x0)
            | (x + w > x1)
            | (y < y0)
            | (y > y1)
            | (y + h < y0)
            | (y + h > y1)
            | (h < h0)
            | (h > h1)
            | ~np.isin(self.occlusion, allowed)
        )


def settings_by_name(names: Sequence[str]) -> Tuple[Setting, ...]:
    """Settings looked up by name (KeyError naming the unknown one)."""
    table: Dict[str, Setting] = {s.name: s for s in SETTINGS}
    for n in names:
        if n not in table:
            raise KeyError(f"unknown KAIST setting {n!r}; known: {', '.join(table)}")
    return tuple(table[n] for n in names)
