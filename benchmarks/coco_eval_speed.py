#!/usr/bin/env python
"""COCO box AP: Detectron2's fast path (its C++ ``COCOeval_opt``) against pycocotools' ``COCOeval``.

    python benchmarks/coco_eval_speed.py --images 5000 --detections 100

A synthetic COCO-val-like set (``--images`` images of 640x480, 1-15 objects of 80 classes
each) and noisy detections (``--detections`` an image, the true boxes jittered plus false
positives) are scored with Detectron2's C++ ``COCOeval_opt`` and with pycocotools'
``COCOeval`` (what ``COCOEvaluator`` runs with ``use_fast_impl`` on and off), then by
detpre's IoU sweep (0.1..0.9 and 0.5:0.95, on the fast path). Prints seconds for each, the
ratio, and checks that both give the same AP.
"""

import argparse
import contextlib
import io
import os
import sys
import time

import numpy as np
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from detpre.evaluation.iou_sweep import coco_iou_sweep  # noqa: E402


def synthetic(images: int, detections: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(80)]}
    results = []
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        n = int(rng.integers(1, 16))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 240, (n, 2))
        classes = rng.integers(1, 81, n)
        for box, c in zip(np.hstack([xy, wh]), classes):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        jitter = np.hstack([xy, wh]) + rng.normal(0, 6, (n, 4))
        false = np.hstack([rng.uniform(0, 400, (detections - n, 2)), rng.uniform(8, 240, (detections - n, 2))])
        boxes = np.vstack([jitter, false])
        labels = np.concatenate([classes, rng.integers(1, 81, detections - n)])
        scores = np.concatenate([rng.uniform(0.5, 1, n), rng.uniform(0, 0.8, detections - n)])
        results += [
            {"image_id": i, "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
            for b, c, s in zip(boxes, labels, scores)
        ]
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, results


def box_ap(coco: COCO, results: list, evaluator_cls) -> COCOeval:
    """What Detectron2's COCOEvaluator runs for "bbox", with the given COCOeval class."""
    evaluation = evaluator_cls(coco, coco.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation


def timed(fn):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    args = parser.parse_args()
    coco, results = synthetic(args.images, args.detections)
    fast_s, fast = timed(lambda: box_ap(coco, results, COCOeval_opt))
    slow_s, slow = timed(lambda: box_ap(coco, results, COCOeval))
    sweep_s, sweep = timed(lambda: coco_iou_sweep(coco, results, use_fast_impl=True))
    assert abs(fast.stats[0] - slow.stats[0]) < 1e-6, (fast.stats[0], slow.stats[0])
    print(f"{args.images} images, {len(results)} detections, AP {100 * fast.stats[0]:.2f} (both paths)")
    print(f"Detectron2 fast path (COCOeval_opt): {fast_s:.1f} s")
    print(f"pycocotools COCOeval:                {slow_s:.1f} s  (fast path is {slow_s / fast_s:.1f}x faster)")
    print(
        f"detpre IoU sweep 0.1..0.9 + 0.5:0.95 on the fast path: {sweep_s:.1f} s ({sweep_s / fast_s:.2f}x the standard)"
    )


if __name__ == "__main__":
    main()
