#!/usr/bin/env python
"""Proposal sources x filter presets on KAIST frames: recall of the persons, boxes, speed.

    OMP_NUM_THREADS=1 python benchmarks/kaist_proposals.py --kaist ../shared/data/kaist-fixture

For each source spec (``--sources``: what ``tools/precompute_proposals.py --generator`` takes,
e.g. ``thermal_blobs@lwir+soco@visible``) and filter preset (``--presets``), the boxes
``search_image`` would write (each source run on its frame, fused by the preset's filter), with
the preset's cap lifted so that both budgets are read from one ordered list. Prints one row
each: boxes per image (all that pass), the persons with a box at IoU 0.5 and 0.7 among the
first 100 and 300 boxes of their frame (all annotated persons, and those of at least 55 px, the
protocol's "reasonable" height), the same at IoU 0.5 / top 300 by day and by night, the
persons that the sources' own boxes reach at IoU 0.5 before any filter (what the filter's
rules, its NMS and the cap cost is the difference), and images/s on one core (one thread:
``cv2.setNumThreads(1)``, torch's and OpenMP's threads 1), with its ratio to the first source
(by default SoCo's search on the visible frame, AlignDet's).

Each (generator, frame) is run ``--repeats`` times per image and timed; the fastest run counts
(the machine may be shared), and every run must give the same boxes (the script stops if not).
A union's time is the sum of its sources' and the fusion's. Frames are read before timing.
"""

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch start their pools
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

from detpre.data.datasets.kaist import register_kaist  # noqa: E402
from detpre.data.image_io import read_image  # noqa: E402
from detpre.data.multispectral import frame_file  # noqa: E402
from detpre.data.proposals import SearchSettings, filter_preset, generate, ground_truth_boxes, proposal_coverage  # noqa: E402
from detpre.data.proposals.generators import to_image_pixels  # noqa: E402

SOURCES = [
    "soco@visible",
    "soco@lwir",
    "soco@both",
    "opencv_fast@both",
    "thermal_blobs@lwir",
    "thermal_mser@lwir",
    "kaist_thermal",
    "kaist_multispectral",
]
#: "Reasonable" height of the KAIST protocol (kaisteval.protocol.SETTINGS).
REASONABLE = 55.0

Key = Tuple[str, str]  # (generator, frame)


def run_sources(
    frames: List[Dict[str, np.ndarray]], keys: Sequence[Key], search_size: int, repeats: int
) -> Tuple[Dict[Key, List[np.ndarray]], Dict[Key, List[float]], List[Tuple[int, int]]]:
    """Boxes and fastest seconds of each (generator, frame) per image; the searched sizes."""
    boxes: Dict[Key, List[np.ndarray]] = {k: [] for k in keys}
    seconds: Dict[Key, List[float]] = {k: [] for k in keys}
    searched: List[Tuple[int, int]] = []
    for image in frames:
        for key in keys:
            best, first = float("inf"), None
            for _ in range(repeats):
                start = time.perf_counter()
                found, size = generate(key[0], image[key[1]], search_size)
                best = min(best, time.perf_counter() - start)
                if first is None:
                    first = found
                elif not np.array_equal(first, found):
                    raise SystemExit(f"{key[0]} on the {key[1]} frame gave other boxes on a second run")
            boxes[key].append(first)
            seconds[key].append(best)
        searched.append(size)
    return boxes, seconds, searched


def recall(kept: Sequence[np.ndarray], gt: Sequence[np.ndarray], iou: float, top: int) -> Tuple[int, int]:
    cov = proposal_coverage([b[:top] for b in kept], gt, iou)
    return cov["covered"], cov["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kaist", required=True, help="a KAIST root (e.g. ../shared/data/kaist-fixture)")
    parser.add_argument("--kaist-image-set", default="test-fixture")
    parser.add_argument("--sources", nargs="+", default=SOURCES, help="source specs; the first is the speed baseline")
    parser.add_argument("--presets", nargs="+", default=["coco_aligndet", "detpre_v1", "kaist_pedestrian"])
    parser.add_argument("--search-size", type=int, default=0, help="longer side of the searched copy (0: as is)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    register_kaist("bench_kaist_sources", args.kaist, args.kaist_image_set, "original")
    dicts = DatasetCatalog.get("bench_kaist_sources")
    frames = [{m: read_image(frame_file(d, m), cv2.IMREAD_COLOR) for m in ("visible", "lwir")} for d in dicts]
    gt_all = [ground_truth_boxes(d) for d in dicts]
    gt_reasonable = [g[(g[:, 3] - g[:, 1]) >= REASONABLE] for g in gt_all]
    day = [bool(d["day"]) for d in dicts]
    settings = {spec: SearchSettings(generator=spec, search_size=args.search_size) for spec in args.sources}
    keys = sorted({k for s in settings.values() for k in s.sources})
    boxes, seconds, searched = run_sources(frames, keys, args.search_size, args.repeats)

    n_day = sum(day)
    print(
        f"{len(dicts)} frames ({n_day} day, {len(dicts) - n_day} night), {sum(len(g) for g in gt_all)} persons, "
        f"{sum(len(g) for g in gt_reasonable)} of at least {REASONABLE:g} px; searched at "
        f"{args.search_size or 'their own size'}; fastest of {args.repeats} runs; recall cells: all / >= 55 px\n"
    )
    print(
        "| source | preset | boxes / image | IoU 0.5, top 100 | IoU 0.5, top 300 | IoU 0.7, top 100 | "
        "IoU 0.7, top 300 | IoU 0.5, top 300, day / night | IoU 0.5, unfiltered | images/s (1 core) | speed vs first |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    baseline = None
    for spec, setting in settings.items():
        raw = [np.concatenate([boxes[k][i] for k in setting.sources]) for i in range(len(dicts))]
        raw = [to_image_pixels(b, searched[i], (d["height"], d["width"])) for i, (b, d) in enumerate(zip(raw, dicts))]
        unfiltered = recall(raw, gt_all, 0.5, len(max(raw, key=len)))
        for preset in args.presets:
            rule = replace(filter_preset(preset), top_k=None)
            kept, fuse_seconds = [], 0.0
            for i, d in enumerate(dicts):
                start = time.perf_counter()
                fused = rule.fuse([boxes[k][i] for k in setting.sources], searched[i])
                fuse_seconds += time.perf_counter() - start
                kept.append(to_image_pixels(fused, searched[i], (d["height"], d["width"])))
            total = sum(sum(seconds[k]) for k in setting.sources) + fuse_seconds
            rate = len(dicts) / total
            baseline = baseline or rate
            cells = []
            for iou in (0.5, 0.7):
                for top in (100, 300):
                    a, b = recall(kept, gt_all, iou, top), recall(kept, gt_reasonable, iou, top)
                    cells.append(f"{a[0]}/{a[1]} · {b[0]}/{b[1]}")
            split = [
                recall(
                    [k for k, dd in zip(kept, day) if dd == when],
                    [g for g, dd in zip(gt_all, day) if dd == when],
                    0.5,
                    300,
                )
                for when in (True, False)
            ]
            cells.append(f"{split[0][0]}/{split[0][1]} · {split[1][0]}/{split[1][1]}")
            cells.append(f"{unfiltered[0]}/{unfiltered[1]}")
            mean_boxes = np.mean([len(k) for k in kept])
            print(
                f"| {spec} | {preset} | {mean_boxes:.0f} | {' | '.join(cells)} | {rate:.2f} | {rate / baseline:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
