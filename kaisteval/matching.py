"""``bbGt>evalRes`` and ``bbGt>compRoc``, vectorised over images.

``evalRes`` matches each image on its own: detections in descending score order (a stable
sort, so equal scores keep their order in the result file), ground truth with the
non-ignored objects first. A detection takes the still-unmatched non-ignored object of
largest IoU >= 0.5 (the last one in file order on ties, since the MATLAB loop replaces its
best match on ``oa >= best``); only when there is none does it look at ignore regions, which
match on ``area(intersection) / area(detection) >= 0.5`` and absorb any number of
detections. Overlaps use the continuous box ``[x, x+w] x [y, y+h]``, no +1 pixel term.

Two observations make this fast. Sorting the ground truth is only needed for MATLAB's loop:
the outcome is "best non-ignored candidate, else any ignore region", so the overlaps of
every detection with every object of its image are computed once and reused by every
setting. And the greedy order matters only between detections that can take a non-ignored
object ("contested" ones): the others are ignored or false positives whatever comes before
them. So the sequential loop runs over ranks: step ``r`` settles the r-th contested
detection of every image at once.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

__all__ = ["Matcher", "Matches", "roc", "sample_miss_rate", "log_average_miss_rate"]

TP, FP, IGNORED = 1, 0, -1


class Matches(NamedTuple):
    """Outcome of one matching; detections in (frame, descending score, file) order.

    ``result`` is 1 (true positive), 0 (false positive) or -1 (absorbed by an ignore region).
    """

    frame: np.ndarray
    score: np.ndarray
    result: np.ndarray
    gt_frame: np.ndarray
    gt_ignored: np.ndarray
    gt_matched: np.ndarray


class Matcher:
    """The detections of an image list set against its ground truth, ready to match.

    Frames are 0-based positions in the image list; boxes are x, y, w, h.
    """

    def __init__(
        self,
        dt_frame: np.ndarray,
        dt_boxes: np.ndarray,
        dt_scores: np.ndarray,
        gt_frame: np.ndarray,
        gt_boxes: np.ndarray,
        n_frames: int,
    ):
        order = np.lexsort((np.arange(len(dt_scores)), -dt_scores, dt_frame))
        self.frame, self.score = dt_frame[order], dt_scores[order]
        self.gt_frame = gt_frame
        gorder = np.argsort(gt_frame, kind="stable")
        count = np.bincount(gt_frame, minlength=n_frames)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        self.width = int(count.max()) if len(order) and len(gt_frame) else 0
        if not self.width:
            return
        # (n_dt, width): the objects of each detection's image (file order), padded.
        slot = np.arange(self.width)
        n_in_frame = count[self.frame][:, None]
        self.valid = slot < n_in_frame
        self.gidx = gorder[np.where(self.valid, start[self.frame][:, None] + slot, 0)]
        dt = dt_boxes[order][:, None, :]
        gt = gt_boxes[self.gidx]
        iw = np.minimum(dt[..., 0] + dt[..., 2], gt[..., 0] + gt[..., 2]) - np.maximum(dt[..., 0], gt[..., 0])
        ih = np.minimum(dt[..., 1] + dt[..., 3], gt[..., 1] + gt[..., 3]) - np.maximum(dt[..., 1], gt[..., 1])
        overlap = self.valid & (iw > 0) & (ih > 0)
        inter = np.where(overlap, iw * ih, 0.0)
        dt_area = dt[..., 2] * dt[..., 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            # compOas: IoU for objects, intersection over the detection's area for ignore regions.
            self.iou = np.where(overlap, inter / (dt_area + gt[..., 2] * gt[..., 3] - inter), 0.0)
            self.ioa = np.where(overlap, inter / dt_area, 0.0)

    def match(self, gt_ignored: np.ndarray, threshold: float = 0.5) -> Matches:
        """``bbGt>evalRes`` (``mul = 0``) with the given per-object ignore flags."""
        n_dt = len(self.frame)
        result = np.full(n_dt, FP, dtype=np.int8)
        matched = np.zeros(len(self.gt_frame), dtype=bool)
        if self.width:
            ign = gt_ignored[self.gidx]
            candidate = self.valid & ~ign & (self.iou >= threshold)
            result[(self.valid & ign & (self.ioa >= threshold)).any(axis=1)] = IGNORED
            contested = np.flatnonzero(candidate.any(axis=1))
            if contested.size:
                # Rank of each contested detection among the contested ones of its image.
                cf = self.frame[contested]
                first = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])
                rank = np.arange(contested.size) - np.repeat(first, np.diff(np.r_[first, contested.size]))
                for r in range(int(rank.max()) + 1):
                    d = contested[rank == r]
                    free = candidate[d] & ~matched[self.gidx[d]]
                    won = free.any(axis=1)
                    d, free = d[won], free[won]
                    # Largest IoU, the last slot on ties: argmax over the reversed row.
                    best = self.width - 1 - np.argmax(np.where(free, self.iou[d], -1.0)[:, ::-1], axis=1)
                    matched[self.gidx[d, best]] = True
                    result[d] = TP
        return Matches(self.frame, self.score, result, self.gt_frame, gt_ignored, matched)


def roc(matches: Matches, frames: np.ndarray, n_images: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``bbGt>compRoc`` (ROC mode) over the frames selected by the boolean mask ``frames``.

    Returns (fppi, recall, score) along the curve: detections absorbed by ignore regions
    are dropped, the rest pooled in descending score order (stable, so ties keep image
    order), recall = tp / #non-ignored objects and FPPI = fp / ``n_images``.
    """
    keep = frames[matches.frame] & (matches.result != IGNORED)
    n_pos = int(np.count_nonzero(frames[matches.gt_frame] & ~matches.gt_ignored))
    result, score = matches.result[keep], matches.score[keep]
    order = np.argsort(-score, kind="stable")
    is_tp = result[order] == TP
    tp = np.cumsum(is_tp)
    fp = np.cumsum(~is_tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        return fp / n_images, tp / n_pos, score[order]


def sample_miss_rate(fppi: np.ndarray, recall: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Miss rate at each reference FPPI: 1 - recall at the last curve point with FPPI <= ref.

    Where no point has FPPI <= ref (few images, first detection a false positive), the
    toolbox's ``-inf`` sentinel gives recall 0, i.e. miss rate 1 (not the first point's).
    An empty curve (no detection outside ignore regions) has recall 0 everywhere.
    """
    padded = np.concatenate([[0.0], recall])
    return 1.0 - padded[np.searchsorted(fppi, ref, side="right")]


def log_average_miss_rate(miss: np.ndarray) -> float:
    """``exp(mean(log(max(1e-10, miss))))``, the MR^-2 of the papers (as a fraction)."""
    return float(np.exp(np.mean(np.log(np.maximum(1e-10, miss)))))
