#!/usr/bin/env python
"""Detection AP at IoU 0.1, 0.2, ..., 0.9 (and 0.50:0.95) for several models, and the plot.

    python tools/ap_vs_iou.py --gt datasets/coco/annotations/instances_val2017.json \
        --results scratch=output/scratch/inference \
        --results imagenet=output/imagenet/inference/coco_instances_results.json \
        --voc --plot ap_vs_iou.png --output ap_vs_iou.json

A ``--results`` value is ``[NAME=]PATH``: a COCO results json, or a Detectron2 inference
directory (its ``coco_instances_results.json``; when ``--gt`` is omitted, the
``*_coco_format.json`` that COCOEvaluator writes there for non-COCO datasets is used).
Without NAME a model is named after its run folder (the one holding ``inference/``); two
models of one name are an error.
COCO's protocol is the default; ``--voc`` adds the Pascal VOC matching rules with both
the VOC07 11-point and the area AP. Where one model's curve falls faster than another's,
its boxes are less precisely placed.
"""

import argparse
import json
import sys
from typing import Dict

from detpre.analysis.ap_vs_iou import evaluate_results, resolve_results
from detpre.analysis.plots import plot_ap_vs_iou
from detpre.evaluation.iou_sweep import IOU_SWEEP, APSweep
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", default="", help="COCO ground-truth json")
    parser.add_argument(
        "--results",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="COCO results json or Detectron2 inference dir; repeat for each model",
    )
    parser.add_argument("--voc", action="store_true", help="also Pascal VOC rules (VOC07 11-point and area AP)")
    parser.add_argument("--per-class", action="store_true", help="print the per-class table too")
    parser.add_argument("--plot", default="", help="PNG of AP vs IoU, every model on one figure")
    parser.add_argument("--output", default="", help="JSON of every number")
    args = parser.parse_args(argv)
    table: Dict[str, Dict[str, APSweep]] = {}
    for spec in resolve_results(args.results):
        gt = args.gt or spec.found_gt
        if not gt:
            raise ValueError(f"no --gt given and no single *_coco_format.json beside {spec.results}")
        table[spec.name] = evaluate_results(gt, spec.results, args.voc)
    header = " ".join(f"{'AP' + str(round(t * 100)):>6}" for t in IOU_SWEEP)
    print(f"{'model':<28} {header} {'AP':>6}")
    for name, sweeps in table.items():
        for metric, sweep in sweeps.items():
            label = name if metric == "coco" else f"{name} ({metric})"
            print(f"{label:<28} " + " ".join(f"{a:6.2f}" for a in sweep.ap) + f" {sweep.ap_coco:6.2f}")
            if args.per_class:
                for cls, aps in sweep.per_class.items():
                    print(f"  {cls:<26} " + " ".join(f"{a:6.2f}" for a in aps) + f" {sweep.per_class_coco[cls]:6.2f}")
    if args.plot:
        plot_ap_vs_iou(table, args.plot)
        print(f"plot written to {args.plot}")
    if args.output:
        report = {name: {m: s.to_dict() for m, s in sweeps.items()} for name, sweeps in table.items()}
        with atomic_write(args.output) as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
