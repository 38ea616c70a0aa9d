#!/usr/bin/env python
"""Proposals per generator and filter preset: boxes per image, recall, images/s per core.

    python benchmarks/proposal_quality.py --kaist ../shared/data/kaist-fixture --demo-images 100

For each dataset (the KAIST fixture's visible and thermal frames with their annotated
persons, when ``--kaist`` is given; the demo's val images with their shapes), each
generator (``--generators``) at each search size (``--search-sizes``: 0 is the image itself)
is run once per image in this process on one thread, timed, and every filter preset
(``--presets``) is applied to its boxes. Prints one row per (frames, generator, size,
preset): proposals per image, the share of annotated objects with a proposal at IoU 0.5 and
0.7, and images/s of the generator on one core (the filter is negligible). These are the
numbers ``tools/precompute_proposals.py`` gives with the same settings (``search_image``).
"""

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

from detpre.data.datasets.demo import ensure_demo_dataset, register_demo  # noqa: E402
from detpre.data.datasets.kaist import register_kaist  # noqa: E402
from detpre.data.image_io import read_image  # noqa: E402
from detpre.data.multispectral import frame_file  # noqa: E402
from detpre.data.proposals import (  # noqa: E402
    PROPOSAL_GENERATORS,
    filter_preset,
    generate,
    ground_truth_boxes,
    proposal_coverage,
)
from detpre.data.proposals.generators import to_image_pixels  # noqa: E402


def datasets(args: argparse.Namespace) -> Dict[str, List[dict]]:
    """``{label: dataset dicts}``; each dict's frame to search is ``_frame``."""
    out = {}
    if args.kaist:
        register_kaist("bench_kaist", args.kaist, args.kaist_image_set, "original")
        dicts = DatasetCatalog.get("bench_kaist")
        for modality in ("visible", "lwir"):
            out[f"KAIST fixture, {modality}"] = [dict(d, _frame=frame_file(d, modality)) for d in dicts]
    root = os.path.join(tempfile.gettempdir(), "detpre_demo_bench")
    ensure_demo_dataset(root)
    register_demo("bench_demo", root)
    demo = DatasetCatalog.get("bench_demo_val")[: args.demo_images]
    out["demo val"] = [dict(d, _frame=d["file_name"]) for d in demo]
    return out


def measure(dicts: Sequence[dict], generator: str, size: int, presets: Sequence[str]) -> List[Dict]:
    gt = [ground_truth_boxes(d) for d in dicts]
    kept: Dict[str, List[np.ndarray]] = {p: [] for p in presets}
    seconds = 0.0
    for d in dicts:
        image = read_image(d["_frame"], cv2.IMREAD_COLOR)
        start = time.perf_counter()
        boxes, searched = generate(generator, image, size)
        seconds += time.perf_counter() - start
        for preset in presets:
            kept[preset].append(to_image_pixels(filter_preset(preset)(boxes, searched), searched, image.shape[:2]))
    rows = []
    for preset in presets:
        row = {"preset": preset, "boxes": float(np.mean([len(b) for b in kept[preset]])), "rate": len(dicts) / seconds}
        for iou in (0.5, 0.7):
            cov = proposal_coverage(kept[preset], gt, iou)
            row[iou] = (cov["covered"], cov["total"])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kaist", help="a KAIST root (e.g. ../shared/data/kaist-fixture)")
    parser.add_argument("--kaist-image-set", default="test-fixture")
    parser.add_argument("--demo-images", type=int, default=100)
    parser.add_argument("--generators", nargs="+", default=["soco", "opencv_fast"], choices=sorted(PROPOSAL_GENERATORS))
    parser.add_argument("--kaist-sizes", type=int, nargs="+", default=[0, 500], help="search sizes on KAIST")
    parser.add_argument("--demo-sizes", type=int, nargs="+", default=[0, 512], help="search sizes on the demo")
    parser.add_argument("--presets", nargs="+", default=["coco_aligndet", "detpre_v1"])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    print("| frames | generator | searched at | preset | boxes / image | recall@0.5 | recall@0.7 | images/s (1 core) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, dicts in datasets(args).items():
        sizes = args.kaist_sizes if label.startswith("KAIST") else args.demo_sizes
        for generator in args.generators:
            for size in sizes:
                for row in measure(dicts, generator, size, args.presets):
                    recall = [f"{c} / {t} ({c / max(t, 1):.0%})" for c, t in (row[0.5], row[0.7])]
                    print(
                        f"| {label} ({len(dicts)}) | {generator} | {size or 'own size'} | {row['preset']} | "
                        f"{row['boxes']:.1f} | {recall[0]} | {recall[1]} | {row['rate']:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
