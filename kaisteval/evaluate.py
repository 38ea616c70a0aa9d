"""Log-average miss rate of a result file in every setting of ``kaist_eval_full.m``."""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from . import protocol
from .bbgt import read_bbgt_many
from .detections import Detections
from .frames import AnnotationLayout, Frame, day_mask
from .matching import Matcher, log_average_miss_rate, roc, sample_miss_rate
from .protocol import IOU_THRESHOLD, REF_FPPI, GroundTruth, Setting

__all__ = ["SettingResult", "load_ground_truth", "evaluate", "summary"]


class SettingResult(NamedTuple):
    """One setting's outcome; rates are fractions (NaN when undefined: no frame or no person)."""

    name: str
    key: str  # the setting's short name, "MR_all", ...
    mr: float  # log-average miss rate over REF_FPPI
    miss_at_ref: np.ndarray  # miss rate at each of REF_FPPI
    recall: float  # recall with every detection kept (last point of the curve)
    fppi: np.ndarray  # the curve: FPPI ...
    miss: np.ndarray  # ... and miss rate, one point per detection in score order
    n_images: int
    n_persons: int  # non-ignored ground truth
    n_detections: int  # detections on the curve (outside ignore regions)

    def to_dict(self) -> Dict[str, object]:
        """JSON-friendly summary, in percent (None where undefined)."""

        def pct(v: float) -> Optional[float]:
            return None if not np.isfinite(v) else 100.0 * float(v)

        return {
            "MR": pct(self.mr),
            "recall": pct(self.recall),
            "miss_rate_at_fppi": [pct(v) for v in self.miss_at_ref],
            "n_images": self.n_images,
            "n_persons": self.n_persons,
            "n_detections": self.n_detections,
        }


def load_ground_truth(annotation_dir: str, frames: Sequence[Frame]) -> GroundTruth:
    """Read the bbGt files of ``frames`` from either annotation layout."""
    layout = AnnotationLayout(annotation_dir, frames[0])
    frame, objects = read_bbgt_many([layout.path(f) for f in frames])
    return GroundTruth(len(frames), frame, objects)


def _subset_mask(subset: str, day: np.ndarray) -> np.ndarray:
    if subset == "all":
        return np.ones(len(day), dtype=bool)
    if subset == "day":
        return day
    if subset == "night":
        return ~day
    raise ValueError(f"unknown image subset {subset!r}; expected 'all', 'day' or 'night'")


def evaluate(
    gt: GroundTruth,
    frames: Sequence[Frame],
    detections: Detections,
    settings: Optional[Sequence[Setting]] = None,
) -> Dict[str, SettingResult]:
    """Evaluate ``detections`` (0-based frame positions in ``frames``) in each setting.

    Overlaps are computed once; settings that differ only by their frames (Reasonable
    all/day/night) share one matching, since ``evalRes`` works image by image. ``settings``
    defaults to every setting of :data:`kaisteval.protocol.SETTINGS`, looked up when called.
    """
    if gt.n_frames != len(frames):
        raise ValueError(f"ground truth covers {gt.n_frames} frames but the image set has {len(frames)}")
    day = day_mask(frames)
    d = detections
    matcher = Matcher(d.frame, d.boxes, d.scores, gt.frame, gt.boxes, len(frames))
    cache = {}
    results: Dict[str, SettingResult] = {}
    for setting in protocol.SETTINGS if settings is None else settings:
        if setting.gt_key not in cache:
            cache[setting.gt_key] = matcher.match(gt.ignored(setting), IOU_THRESHOLD)
        matches = cache[setting.gt_key]
        mask = _subset_mask(setting.subset, day)
        n_images = int(mask.sum())
        fppi, recall, _ = roc(matches, mask, n_images)
        n_persons = int(np.count_nonzero(mask[matches.gt_frame] & ~matches.gt_ignored))
        if n_images == 0 or n_persons == 0:
            miss_at_ref = np.full(len(REF_FPPI), np.nan)
        else:
            miss_at_ref = sample_miss_rate(fppi, recall, REF_FPPI)
        results[setting.name] = SettingResult(
            name=setting.name,
            key=setting.key,
            mr=log_average_miss_rate(miss_at_ref),
            miss_at_ref=miss_at_ref,
            recall=float(recall[-1]) if len(recall) else (0.0 if n_persons else np.nan),
            fppi=fppi,
            miss=1.0 - recall,
            n_images=n_images,
            n_persons=n_persons,
            n_detections=len(fppi),
        )
    return results


def summary(results: Dict[str, SettingResult]) -> Dict[str, Optional[float]]:
    """The MR of every evaluated setting in percent (None where undefined), under its short
    name: ``MR_all``, ``MR_day``, ``MR_night``, ``MR_near``, ..., ``MR_occ_heavy``."""
    return {r.key: r.to_dict()["MR"] for r in results.values()}
