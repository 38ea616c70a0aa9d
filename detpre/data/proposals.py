"""Unsupervised box proposals for box-domain pre-training (AlignDet, Li et al., ICCV 2023).

AlignDet pre-trains everything outside the backbone on *unlabeled* images, with selective
search boxes standing in for objects. Its released proposals
(``train2017_ratio3size0008@0.5.json``) name the filtering: aspect ratio at most 3, a
relative-size window and NMS at IoU 0.5, following SoCo's naming where the size is
``sqrt(box area / image area)``. :class:`ProposalFilter` applies the same three rules and
keeps at most ``top_k`` boxes an image; the window's lower end drops the specks selective
search returns by the thousand, the upper end drops boxes that are nearly the whole image
(they carry no box-level signal: every augmentation keeps them nearly identical).

Boxes are kept in selective search's own order (its hierarchical-grouping rank, best
first), which is also what NMS and ``top_k`` rank by. The file written by
``tools/precompute_proposals.py`` is a Detectron2 proposal file (``ids``, ``boxes``,
``objectness_logits``, ``bbox_mode``) whose logits encode that rank, so
``DATASETS.PROPOSAL_FILES_TRAIN`` + ``MODEL.LOAD_PROPOSALS`` put the boxes into any
registered dataset's dicts (``proposal_boxes``) without touching its annotations.
"""

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.layers import nms
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["ProposalFilter", "selective_search", "merge_ranked", "proposal_coverage", "rank_logits"]


@dataclass(frozen=True)
class ProposalFilter:
    """AlignDet's filtering of selective search boxes (see the module docstring)."""

    #: max(w / h, h / w) allowed.
    max_aspect_ratio: float = 3.0
    #: sqrt(box area / image area) window; 0.02 is ~10 px on a 640 x 480 COCO image.
    min_relative_size: float = 0.02
    max_relative_size: float = 0.8
    #: Boxes overlapping a better-ranked kept box by more than this IoU are dropped.
    nms_threshold: float = 0.5
    #: Boxes kept per image, best-ranked first.
    top_k: int = 100

    def __post_init__(self):
        checks = {
            "max_aspect_ratio": self.max_aspect_ratio >= 1.0,
            "min_relative_size": 0.0 <= self.min_relative_size < self.max_relative_size,
            "max_relative_size": 0.0 < self.max_relative_size <= 1.0,
            "nms_threshold": 0.0 < self.nms_threshold <= 1.0,
            "top_k": self.top_k >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ProposalFilter: invalid {name}={getattr(self, name)!r} ({asdict(self)}).")

    def __call__(self, boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
        """Filter ``boxes`` (N x 4 XYXY, best-ranked first) of an image of ``(height, width)``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        height, width = image_size
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        positive = (w > 0) & (h > 0)
        ratio = np.where(positive, np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-6), np.inf)
        size = np.sqrt(np.clip(w * h, 0, None) / float(height * width))
        keep = positive & (ratio <= self.max_aspect_ratio)
        keep &= (size >= self.min_relative_size) & (size <= self.max_relative_size)
        boxes = boxes[keep]
        if len(boxes) == 0:
            return boxes
        kept = nms(torch.from_numpy(boxes), torch.from_numpy(rank_logits(len(boxes))), self.nms_threshold)
        # torchvision's NMS returns the kept indices by decreasing score, i.e. by rank.
        return boxes[kept[: self.top_k].numpy()]


def rank_logits(n: int) -> np.ndarray:
    """Scores that sort ``n`` ranked boxes in their order (Detectron2 sorts by decreasing logit)."""
    return -np.arange(n, dtype=np.float32)


def selective_search(image: np.ndarray, max_size: int = 500, fast: bool = True) -> np.ndarray:
    """Selective search boxes (N x 4 XYXY, in ``image``'s pixels), best-ranked first.

    Runs OpenCV contrib's ``ximgproc`` implementation on a copy whose longer side is at
    most ``max_size``: its cost grows much faster than the pixel count (~1 s at 300 px,
    ~12 s at 640 px on one core) while the boxes that survive filtering change little.
    A single-channel image (a thermal frame) is searched as grey BGR.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    height, width = image.shape[:2]
    scale = min(1.0, max_size / float(max(height, width)))
    small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(small)
    if fast:
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def merge_ranked(ranked: Sequence[np.ndarray]) -> np.ndarray:
    """Interleave several best-first box lists (rank 0 of each, then rank 1, ...).

    Used to merge the boxes of a visible and a thermal frame before filtering, so that
    neither modality fills the top-K alone; NMS then removes the boxes both found.
    """
    ranked = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in ranked]
    longest = max((len(b) for b in ranked), default=0)
    rows: List[np.ndarray] = []
    for i in range(longest):
        rows.extend(b[i] for b in ranked if i < len(b))
    return np.stack(rows) if rows else np.zeros((0, 4), dtype=np.float32)


def proposal_coverage(
    proposals: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], iou_threshold: float = 0.5
) -> Dict[str, int]:
    """How many ground-truth boxes have a proposal at IoU >= ``iou_threshold``, per image.

    Args:
        proposals, ground_truth: per image, N x 4 XYXY boxes (same order of images).
    Returns:
        ``{"covered": ..., "total": ...}`` over all images.
    """
    if len(proposals) != len(ground_truth):
        raise ValueError(f"{len(proposals)} proposal lists for {len(ground_truth)} ground-truth lists.")
    covered = total = 0
    for props, gt in zip(proposals, ground_truth):
        gt = torch.as_tensor(np.asarray(gt, dtype=np.float32).reshape(-1, 4))
        props = torch.as_tensor(np.asarray(props, dtype=np.float32).reshape(-1, 4))
        total += len(gt)
        if len(gt) and len(props):
            best = pairwise_iou(Boxes(gt), Boxes(props)).max(dim=1).values
            covered += int((best >= iou_threshold).sum())
    return {"covered": covered, "total": total}
