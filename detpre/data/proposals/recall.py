"""How well proposals cover a dataset's annotated objects (recall at an IoU)."""

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["ground_truth_boxes", "proposal_coverage"]


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


def ground_truth_boxes(record: Dict[str, Any]) -> Optional[np.ndarray]:
    """The non-crowd annotated boxes of a dataset dict as XYXY_ABS, None if it has no annotations."""
    if "annotations" not in record:
        return None
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
