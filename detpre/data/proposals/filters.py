"""Which selective-search boxes become proposals: AlignDet's filter, and named presets.

AlignDet's released file ``train2017_ratio3size0008@0.5.json`` names SoCo's filter
(``selective_search/filters.py``, ``filter_ratio_size``; the name is parsed in
``filter_ss_proposals_json.py``): ``ratio3`` is an aspect ratio within [1/3, 3], ``size0008``
a ``sqrt(box area / image area)`` within [0.0, 0.8], and every SoCo filter also requires a
box of at least 32 x 32 pixels. ``@0.5`` is read as an NMS at IoU 0.5 (no released code
produces it; selective search has no score, so NMS ranks by the generator's order). There is
no top-k: SoCo keeps every box that passes.

:class:`ProposalFilter` applies those rules in that order, with SoCo's own comparisons (the
ratio as ``1/r <= w/h <= r``, the size as ``sqrt(w*h) / sqrt(W*H)``), so that a preset gives
SoCo's verdict on every box. Presets are registered by name (:data:`FILTER_PRESETS`,
:func:`register_filter_preset`): ``coco_aligndet`` is AlignDet's; ``detpre_v1`` is what
detpre used before it matched AlignDet (no pixel minimum, a 0.02 size floor, top 100), kept to
reproduce old files; ``kaist_pedestrian`` is for KAIST's pedestrians (below).

Several sources of boxes (the frames of a pair, several generators) are fused by
:meth:`ProposalFilter.fuse`: each source's boxes that pass the rules, interleaved by rank
(the first of each source, then the second, ...: their scores, where they have any, are not
comparable), then one NMS and the cap over the fused list, so that a box two sources found
is kept once, where it ranked first.

``kaist_pedestrian``: KAIST's pedestrians are small and upright (a 55 px tall person, the
protocol's "reasonable" minimum, is about 23 px wide): AlignDet's 32 px sides and its
symmetric aspect window [1/3, 3] would drop most of them and keep lying boxes. Its rules:

* w / h within [0.2, 1.0]: upright (never wider than tall; a cyclist or a group is at most
  about square), and at least half Dollar et al.'s standard 0.41 (PAMI 2012): a box of the
  same height and a narrower shape cannot reach IoU 0.5 with a standard pedestrian;
* height at least 20 px and no minimum width: 20 px is the smallest height Caltech's
  evaluation counts (``dbEval.m``: "All" [20, inf), "Scale=far" [20, 30]; KAIST's "far",
  [1, 45], sets no floor), and about the smallest object detpre's KAIST detectors anchor
  (32 px anchors on frames upscaled 1.5x, ``configs/KAIST/Base-KAIST-RCNN-FPN.yaml``);
* sizes up to AlignDet's 0.8 (on a 640 x 512 frame, a square of 458 px: no person), NMS 0.5
  as AlignDet (in its contrastive loss two RoIs of one person would be each other's
  negatives), top 300 per image (the budget the KAIST issue sets).

The heights are in the pixels of the searched copy (the image itself by default).
"""

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.layers import nms

__all__ = [
    "FILTER_PRESETS",
    "ProposalFilter",
    "filter_preset",
    "merge_ranked",
    "rank_logits",
    "register_filter_preset",
]


@dataclass(frozen=True)
class ProposalFilter:
    """Rules a box (in the searched image's pixels) must pass, then NMS and an optional cap."""

    #: Both sides at least this many pixels (SoCo's ``w >= 32 and h >= 32``); 0 disables.
    min_side: float = 32.0
    #: ``1 / r <= w / h <= r`` (the lower end is ``min_aspect_ratio`` when that is set).
    max_aspect_ratio: float = 3.0
    #: ``sqrt(box area / image area)`` window, both ends included.
    min_relative_size: float = 0.0
    max_relative_size: float = 0.8
    #: A box overlapping an earlier kept box (in the generator's order) by more than this IoU
    #: is dropped; 1.0 disables NMS.
    nms_threshold: float = 0.5
    #: Boxes kept per image, first ones first; None keeps all.
    top_k: Optional[int] = None
    #: Box height at least this many pixels (a pedestrian rule; SoCo has none); 0 disables.
    min_height: float = 0.0
    #: The lower end of the w / h window; None: SoCo's symmetric ``1 / max_aspect_ratio``.
    min_aspect_ratio: Optional[float] = None

    def __post_init__(self):
        low = self.min_aspect_ratio
        checks = {
            "min_side": self.min_side >= 0.0,
            "max_aspect_ratio": self.max_aspect_ratio >= 1.0 if low is None else self.max_aspect_ratio > 0.0,
            "min_aspect_ratio": low is None or 0.0 < low <= self.max_aspect_ratio,
            "min_height": self.min_height >= 0.0,
            "min_relative_size": 0.0 <= self.min_relative_size < self.max_relative_size,
            "max_relative_size": 0.0 < self.max_relative_size <= 1.0,
            "nms_threshold": 0.0 < self.nms_threshold <= 1.0,
            "top_k": self.top_k is None or self.top_k >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ProposalFilter: invalid {name}={getattr(self, name)!r} ({asdict(self)}).")

    def keep(self, boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
        """The mask of ``boxes`` (N x 4 XYXY) that pass the size and shape rules."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        height, width = image_size
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        keep = (w > 0) & (h > 0) & (w >= self.min_side) & (h >= self.min_side) & (h >= self.min_height)
        ratio = np.divide(w, h, out=np.zeros_like(w), where=keep)
        r = self.max_aspect_ratio
        low = 1.0 / r if self.min_aspect_ratio is None else self.min_aspect_ratio
        keep &= (low <= ratio) & (ratio <= r)
        size = np.sqrt(np.clip(w * h, 0, None)) / np.sqrt(float(width * height))
        keep &= (self.min_relative_size <= size) & (size <= self.max_relative_size)
        return keep

    def __call__(self, boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
        """Filter ``boxes`` (N x 4 XYXY, in the generator's order) of an image of ``(height, width)``;
        the kept boxes stay in that order."""
        return self.fuse([boxes], image_size)

    def fuse(self, ranked: Sequence[np.ndarray], image_size: Tuple[int, int]) -> np.ndarray:
        """Filter several sources' boxes of one image (each list in its source's order): each
        list's boxes that pass the rules, interleaved by rank (:func:`merge_ranked`), then NMS
        and the cap over the fused list, which keeps that order."""
        ranked = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in ranked]
        boxes = merge_ranked([b[self.keep(b, image_size)] for b in ranked])
        if len(boxes) and self.nms_threshold < 1.0:
            kept = nms(torch.from_numpy(boxes), torch.from_numpy(rank_logits(len(boxes))), self.nms_threshold)
            # torchvision's NMS returns the kept indices by decreasing score, i.e. in order.
            boxes = boxes[kept.numpy()]
        return boxes if self.top_k is None else boxes[: self.top_k]


def merge_ranked(ranked: Sequence[np.ndarray]) -> np.ndarray:
    """Interleave several ordered box lists (the first of each, then the second, ...)."""
    ranked = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in ranked]
    if len(ranked) == 1:
        return ranked[0]
    if not ranked:
        return np.zeros((0, 4), dtype=np.float32)
    # Rank within its list, lists in their order for equal ranks: a stable sort by rank.
    ranks = np.concatenate([np.arange(len(b)) for b in ranked])
    return np.concatenate(ranked)[np.argsort(ranks, kind="stable")]


def rank_logits(n: int) -> np.ndarray:
    """Scores that sort ``n`` ordered boxes in their order (Detectron2 sorts by decreasing logit)."""
    return -np.arange(n, dtype=np.float32)


#: Named filters (``--preset`` of tools/precompute_proposals.py).
FILTER_PRESETS: Dict[str, ProposalFilter] = {}


def register_filter_preset(name: str, proposal_filter: ProposalFilter) -> None:
    """Add a named preset; a name is registered once."""
    if name in FILTER_PRESETS:
        raise ValueError(f"Proposal filter preset {name!r} is already registered ({FILTER_PRESETS[name]}).")
    FILTER_PRESETS[name] = proposal_filter


def filter_preset(name: str) -> ProposalFilter:
    if name not in FILTER_PRESETS:
        raise KeyError(f"No proposal filter preset {name!r}; registered: {sorted(FILTER_PRESETS)}.")
    return FILTER_PRESETS[name]


# AlignDet's ratio3size0008@0.5 (SoCo's filter_ratio_size, r=3, sizes 0.0-0.8, w, h >= 32; NMS 0.5).
register_filter_preset("coco_aligndet", ProposalFilter())
# detpre before it matched AlignDet: no pixel minimum, size floor 0.02, top 100 per image.
register_filter_preset("detpre_v1", ProposalFilter(min_side=0.0, min_relative_size=0.02, top_k=100))
# KAIST pedestrians (module docstring): upright w / h in [0.2, 1], at least 20 px tall, NMS 0.5, top 300.
register_filter_preset(
    "kaist_pedestrian",
    ProposalFilter(min_side=0.0, max_aspect_ratio=1.0, min_aspect_ratio=0.2, min_height=20.0, top_k=300),
)
