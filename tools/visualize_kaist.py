#!/usr/bin/env python
"""Draw KAIST ground truth and/or detections on the visible and the LWIR frame, side by side.

    python tools/visualize_kaist.py --dataset kaist_test_all20_improved \\
        --predictions output/inference/kaist_test_all20_improved/kaist_detections.txt \\
        --output-dir vis/ --score-threshold 0.5 --max-frames 20

    # any KAIST root, without registering it in code:
    python tools/visualize_kaist.py --dataset my_kaist --register ROOT test-all-20 improved --output-dir vis/

One PNG per frame (``setXX_VYYY_IZZZZZ.png``), drawn with Detectron2's ``Visualizer``:
ground-truth persons in green, ignore regions (``people``, ``cyclist``, ``person?``, boxes
outside the training setting) dashed grey, labelled below, detections in red with their
score below on the right. Detections are read from Detectron2's ``instances_predictions.pth`` (COCOEvaluator's
dump, matched by ``image_id``), or from the KAIST text format ``frame,x,y,w,h,score``
(``kaist_detections.txt`` of KAISTEvaluator) or COCO-style results json (``image_id`` = the
frame's 0-based position), both read by ``kaisteval``.
"""

import argparse
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer

import detpre  # noqa: F401  (registers the KAIST names)
from detpre.data.datasets.kaist import ANNOTATION_VERSIONS, register_kaist
from detpre.data.image_io import read_image
from detpre.utils.cli import cli_main
from detpre.utils.file_io import write_image

GT_COLOR = (0.1, 0.8, 0.1)
IGNORE_COLOR = (0.6, 0.6, 0.6)
DETECTION_COLOR = (0.95, 0.1, 0.1)
# (x, y, w, h) box, score; per dataset position
Predictions = Dict[int, List[Tuple[Sequence[float], float]]]


def read_predictions(path: str, dicts: List[dict]) -> Predictions:
    """Detections per position in ``dicts``, from any of the supported files."""
    found: Predictions = defaultdict(list)
    if path.endswith(".pth"):
        position = {d["image_id"]: i for i, d in enumerate(dicts)}
        for entry in torch.load(path, map_location="cpu"):
            if entry["image_id"] not in position:
                raise KeyError(f"{path}: image_id {entry['image_id']!r} is not a frame of the dataset.")
            for det in entry.get("instances", []):
                found[position[entry["image_id"]]].append((det["bbox"], float(det["score"])))
        return found
    from kaisteval.detections import read_detections

    detections = read_detections(path, len(dicts))
    for frame, box, score in zip(detections.frame, detections.boxes, detections.scores):
        found[int(frame)].append((box.tolist(), float(score)))
    return found


def draw(image_rgb: np.ndarray, record: dict, detections, show_gt: bool, threshold: float, metadata) -> np.ndarray:
    """One frame with its boxes, as an RGB array."""
    vis = Visualizer(image_rgb, metadata)
    if show_gt:
        for ann in record.get("annotations", []):
            x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
            crowd = bool(ann.get("iscrowd", 0))
            color = IGNORE_COLOR if crowd else GT_COLOR
            vis.draw_box((x0, y0, x1, y1), edge_color=color, line_style="--" if crowd else "-")
            if crowd:
                vis.draw_text(ann.get("label", "ignore"), (x0, y1), color=color, horizontal_alignment="left")
    for box, score in detections:
        if score < threshold:
            continue
        x, y, w, h = box
        vis.draw_box((x, y, x + w, y + h), edge_color=DETECTION_COLOR)
        vis.draw_text(f"{score:.2f}", (x + w, y + h), color=DETECTION_COLOR, horizontal_alignment="right")
    return vis.get_output().get_image()


def render(record: dict, detections, show_gt: bool, threshold: float, metadata) -> np.ndarray:
    """Visible | LWIR, side by side, as a BGR array for cv2.imwrite."""
    panels = []
    for key in ("file_name", "lwir_file_name"):
        image = read_image(record[key], cv2.IMREAD_COLOR)
        panels.append(draw(image[:, :, ::-1], record, detections, show_gt, threshold, metadata))
    if panels[0].shape != panels[1].shape:
        raise ValueError(f"{record['file_name']} and {record['lwir_file_name']} differ in size.")
    return np.concatenate(panels, axis=1)[:, :, ::-1]


def select(dicts: List[dict], frames: Optional[Sequence[str]], max_frames: int) -> List[int]:
    """Positions of the frames to draw: the named ones (``setXX/VYYY/IZZZZZ``) or the first N."""
    if not frames:
        return list(range(min(max_frames, len(dicts))))
    position = {f"{d['set_id']}/{d['video_id']}/{d['frame_id']}": i for i, d in enumerate(dicts)}
    missing = [f for f in frames if f not in position]
    if missing:
        raise KeyError(f"Frames not in the dataset: {', '.join(missing)}")
    return [position[f] for f in frames]


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered KAIST dataset name")
    parser.add_argument(
        "--register",
        nargs=3,
        metavar=("ROOT", "IMAGE_SET", "VERSION"),
        help=f"register --dataset first from a KAIST root (VERSION: {', '.join(ANNOTATION_VERSIONS)})",
    )
    parser.add_argument("--predictions", help="instances_predictions.pth, kaist_detections.txt or results .json")
    parser.add_argument("--no-gt", action="store_true", help="draw detections only")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="hide weaker detections (default 0.5)")
    parser.add_argument("--frames", nargs="+", help="frames to draw, as setXX/VYYY/IZZZZZ (default: the first ones)")
    parser.add_argument("--max-frames", type=int, default=20, help="without --frames: how many (default 20)")
    parser.add_argument("--output-dir", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)

    if args.register:
        register_kaist(args.dataset, *args.register)
    dicts = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(args.dataset)
    predictions = read_predictions(args.predictions, dicts) if args.predictions else {}
    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for i in select(dicts, args.frames, args.max_frames):
        record = dicts[i]
        image = render(record, predictions.get(i, []), not args.no_gt, args.score_threshold, metadata)
        path = os.path.join(args.output_dir, f"{record['set_id']}_{record['video_id']}_{record['frame_id']}.png")
        write_image(path, image)
        written.append(path)
    print(f"Wrote {len(written)} images to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
