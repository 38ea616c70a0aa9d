#!/usr/bin/env python
"""Detection AP at IoU 0.1, 0.2, ..., 0.9 (and 0.50:0.95) for several models, and the plot.

    python tools/ap_vs_iou.py --gt datasets/coco/annotations/instances_val2017.json \
        --results scratch=output/scratch/inference \
        --results imagenet=output/imagenet/inference/coco_instances_results.json \
        --voc --plot ap_vs_iou.png --output ap_vs_iou.json

A ``--results`` value is ``[NAME=]PATH``: a COCO results json, or a Detectron2 inference
directory (its ``coco_instances_results.json``; when ``--gt`` is omitted, the
``*_coco_format.json`` that COCOEvaluator writes there for non-COCO datasets is used).
COCO's protocol is the default; ``--voc`` adds the Pascal VOC matching rules with both
the VOC07 11-point and the area AP. Where one model's curve falls faster than another's,
its boxes are less precisely placed.
"""
import argparse
import contextlib
import glob
import io
import json
import os
import sys
from typing import Dict, List, Tuple

from pycocotools.coco import COCO

from detpre.analysis.plots import plot_ap_vs_iou
from detpre.evaluation.iou_sweep import IOU_SWEEP, APSweep, coco_iou_sweep, coco_voc_iou_sweep
from detpre.utils.file_io import atomic_write

RESULTS_FILE = "coco_instances_results.json"


def resolve_results(spec: str) -> Tuple[str, str, str]:
    """``[NAME=]PATH`` -> (name, results json, ground-truth json found beside it or "")."""
    name, path = ("", spec) if os.path.exists(spec) or "=" not in spec else spec.split("=", 1)
    path = os.path.normpath(path)
    gt = ""
    if os.path.isdir(path):
        candidates = glob.glob(os.path.join(path, "*_coco_format.json"))
        gt = candidates[0] if len(candidates) == 1 else ""
        results = os.path.join(path, RESULTS_FILE)
        default_name = os.path.basename(os.path.dirname(path)) if os.path.basename(path) == "inference" else path
    else:
        results, default_name = path, os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(results):
        raise FileNotFoundError(f"results {results!r} do not exist (from --results {spec!r})")
    return name or os.path.basename(default_name), results, gt


def load_results(path: str, coco_gt: COCO) -> List[dict]:
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list) or any("bbox" not in r or "score" not in r for r in results):
        raise ValueError(f"{path} is not a COCO box results list (dicts with image_id, category_id, bbox, score)")
    missing = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(f"{path} has detections on {len(missing)} image id(s) absent from the ground truth, "
                         f"e.g. {sorted(missing)[:5]}")
    return results


def evaluate(gt_path: str, results_path: str, voc: bool) -> Dict[str, APSweep]:
    """``{"coco": sweep}`` plus ``"voc07"`` and ``"voc_area"`` with ``voc``."""
    if not os.path.isfile(gt_path):
        raise FileNotFoundError(f"ground truth {gt_path!r} does not exist")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
    results = load_results(results_path, coco_gt)
    sweeps = {"coco": coco_iou_sweep(coco_gt, results)}
    if voc:
        sweeps.update(coco_voc_iou_sweep(coco_gt, results))
    return sweeps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", default="", help="COCO ground-truth json")
    parser.add_argument("--results", action="append", required=True, metavar="[NAME=]PATH",
                        help="COCO results json or Detectron2 inference dir; repeat for each model")
    parser.add_argument("--voc", action="store_true", help="also Pascal VOC rules (VOC07 11-point and area AP)")
    parser.add_argument("--per-class", action="store_true", help="print the per-class table too")
    parser.add_argument("--plot", default="", help="PNG of AP vs IoU, every model on one figure")
    parser.add_argument("--output", default="", help="JSON of every number")
    args = parser.parse_args(argv)
    table: Dict[str, Dict[str, APSweep]] = {}
    try:
        for spec in args.results:
            name, results, found_gt = resolve_results(spec)
            gt = args.gt or found_gt
            if not gt:
                raise ValueError(f"no --gt given and no single *_coco_format.json beside {results}")
            table[name] = evaluate(gt, results, args.voc)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header = " ".join(f"{'AP' + str(round(t * 100)):>6}" for t in IOU_SWEEP)
    print(f"{'model':<28} {header} {'AP':>6}")
    curves = {}
    for name, sweeps in table.items():
        for metric, sweep in sweeps.items():
            label = name if metric == "coco" else f"{name} ({metric})"
            curves[label] = (sweep.thresholds, sweep.ap)
            print(f"{label:<28} " + " ".join(f"{a:6.2f}" for a in sweep.ap) + f" {sweep.ap_coco:6.2f}")
            if args.per_class:
                for cls, aps in sweep.per_class.items():
                    print(f"  {cls:<26} " + " ".join(f"{a:6.2f}" for a in aps) + f" {sweep.per_class_coco[cls]:6.2f}")
    if args.plot:
        plot_ap_vs_iou(curves, args.plot)
        print(f"plot written to {args.plot}")
    if args.output:
        report = {name: {m: s.to_dict() for m, s in sweeps.items()} for name, sweeps in table.items()}
        with atomic_write(args.output) as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
