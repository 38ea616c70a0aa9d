#!/usr/bin/env python
"""Draw KAIST frames as the evaluation sees them: visible | LWIR, detections coloured by the matching.

    python tools/visualize_kaist.py --dataset kaist_test_all20_improved \\
        --predictions output/inference/kaist_test_all20_improved/kaist_detections.txt \\
        --output-dir vis/ --score-threshold 0.5 --max-frames 20 [--setting Reasonable-night]

    # any KAIST root, without registering it in code:
    python tools/visualize_kaist.py --dataset my_kaist --register ROOT test-all-20 improved --output-dir vis/

One PNG per frame (``setXX_VYYY_IZZZZZ.png``), the visible and the LWIR frame side by side
at their own size. The detections that score at least ``--score-threshold`` are matched to the
ground truth of ``--setting`` (default Reasonable-all) as the KAIST toolbox matches them
(``kaisteval``): true positives green, false positives red, detections in ignore regions grey
and dotted, with their scores; missed persons amber, persons the setting does not count grey
and dashed with the reason. A title gives the frame, the setting, the threshold and the counts,
a legend the colours. Detections are read from Detectron2's ``instances_predictions.pth``
(COCOEvaluator's dump, matched by ``image_id``), or from the KAIST text format
``frame,x,y,w,h,score`` (``kaist_detections.txt`` of KAISTEvaluator) or COCO-style results
json (``image_id`` = the frame's 0-based position), both read by ``kaisteval``.
"""

import argparse
import os
import sys

from detectron2.data import DatasetCatalog

import detpre  # noqa: F401  (registers the KAIST names)
from detpre.data.datasets.kaist import ANNOTATION_VERSIONS, register_kaist
from detpre.utils.cli import cli_main
from detpre.utils.file_io import write_image
from detpre.utils.kaist_visualizer import classify_frame, read_predictions, render_frame, select
from kaisteval.protocol import SETTINGS, settings_by_name


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
    parser.add_argument("--no-gt", action="store_true", help="draw detections only (no missed or ignored persons)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="hide weaker detections (default 0.5)")
    parser.add_argument(
        "--setting",
        default="Reasonable-all",
        choices=[s.name for s in SETTINGS],
        help="the KAIST setting whose persons count and are matched (default Reasonable-all)",
    )
    parser.add_argument("--frames", nargs="+", help="frames to draw, as setXX/VYYY/IZZZZZ (default: the first ones)")
    parser.add_argument("--max-frames", type=int, default=20, help="without --frames: how many (default 20)")
    parser.add_argument("--output-dir", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)

    if args.register:
        register_kaist(args.dataset, *args.register)
    dicts = DatasetCatalog.get(args.dataset)
    (setting,) = settings_by_name([args.setting])
    predictions = read_predictions(args.predictions, dicts) if args.predictions else None
    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for i in select(dicts, args.frames, args.max_frames):
        record = dicts[i]
        detections = None if predictions is None else predictions.get(i, [])
        view = classify_frame(record, detections, setting, args.score_threshold, not args.no_gt, args.dataset)
        path = os.path.join(args.output_dir, f"{record['set_id']}_{record['video_id']}_{record['frame_id']}.png")
        write_image(path, render_frame(record, view))
        written.append(path)
    print(f"Wrote {len(written)} images to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
