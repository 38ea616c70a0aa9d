#!/usr/bin/env python
"""Unsupervised box proposals of a registered dataset, for box-domain pre-training (AlignDet).

    # AlignDet's proposals for COCO: SoCo's selective search at full size, ratio3size0008@0.5
    python tools/precompute_proposals.py --dataset coco_2017_train \\
        --output datasets/proposals/coco_2017_train_soco.json --workers 16

    # the same as a SLURM array of 64 tasks, then one merge (see docs/aligndet.md)
    python tools/precompute_proposals.py ... --shard $SLURM_ARRAY_TASK_ID/64
    python tools/precompute_proposals.py ... --merge 64

The output's extension picks its format: ``.json`` is AlignDet's (a COCO instances file with
one category, ``selective_search``, a proposal per annotation, xywh), ``.pkl`` Detectron2's
proposal file (faster to load). Either is read by ``DATASETS.PROPOSAL_FILES_TRAIN`` with
``MODEL.LOAD_PROPOSALS`` (``detpre.data.proposals.formats``), and so is AlignDet's released
``train2017_ratio3size0008@0.5.json`` for ``coco_2017_train``.

``--generator`` names a box generator (``soco``, AlignDet's; ``opencv_fast``,
``opencv_quality``), ``--preset`` a filter (``coco_aligndet``, AlignDet's; ``detpre_v1``);
filter flags override single rules of the preset. ``--search-size`` searches a copy whose
longer side is that many pixels (0: the image itself, as SoCo). ``--modality`` picks the
frame of multispectral datasets (``lwir_file_name``): ``visible``, ``lwir`` or ``both``.

The same images and settings give the same file, byte for byte, whatever ``--workers`` and
``--shard``. Resumable: finished images are journaled in ``<output>.partial`` (per shard:
``<shard file>.partial``); a restarted run with the same settings skips them. When the dataset
has annotations, the run reports the recall of the annotated objects at ``--recall-iou``.
"""

import argparse
import os
import sys
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog

import detpre  # noqa: F401  (registers detpre's datasets)
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposals import (
    FILTER_PRESETS,
    MODALITIES,
    PROPOSAL_GENERATORS,
    SearchSettings,
    compute_proposals,
    filter_preset,
    ground_truth_boxes,
    load_proposals_into_dicts,
    merge_shards,
    parse_shard,
    proposal_coverage,
)
from detpre.utils.cli import cli_main

#: Filter flags: flag -> ProposalFilter field.
FILTER_FLAGS = {
    "--min-side": "min_side",
    "--max-aspect-ratio": "max_aspect_ratio",
    "--min-relative-size": "min_relative_size",
    "--max-relative-size": "max_relative_size",
    "--nms": "nms_threshold",
}


def report(dicts, path: str, iou_thresholds: Sequence[float]) -> None:
    """Boxes per image, and the recall of the annotated objects, of the file just written."""
    loaded = load_proposals_into_dicts([dict(d) for d in dicts], path)
    boxes = [d["proposal_boxes"] for d in loaded]
    print(f"{len(boxes)} images, {np.mean([len(b) for b in boxes]):.1f} proposals/image -> {path}")
    gt = [ground_truth_boxes(d) for d in dicts]
    if all(g is None for g in gt):
        return
    gt = [g if g is not None else np.zeros((0, 4)) for g in gt]
    for iou in iou_thresholds:
        cov = proposal_coverage(boxes, gt, iou)
        share = cov["covered"] / max(cov["total"], 1)
        print(f"recall@{iou:g}: {cov['covered']} of {cov['total']} annotated objects ({share:.1%}) have a proposal")


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. coco_2017_train")
    parser.add_argument("--output", required=True, help="the proposal file: .json (AlignDet/COCO) or .pkl (Detectron2)")
    parser.add_argument("--generator", default="soco", choices=sorted(PROPOSAL_GENERATORS))
    parser.add_argument("--preset", default="coco_aligndet", choices=sorted(FILTER_PRESETS))
    parser.add_argument("--search-size", type=int, default=0, help="longer side of the searched copy (0: as is)")
    parser.add_argument("--modality", default="visible", choices=MODALITIES)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shard", type=parse_shard, metavar="I/N", help="compute only block I of N (0-based)")
    group.add_argument("--merge", type=int, metavar="N", help="write the output from its N shard files")
    for flag, name in FILTER_FLAGS.items():
        parser.add_argument(flag, type=float, dest=name, help=f"override the preset's {name}")
    parser.add_argument("--top-k", type=int, dest="top_k", help="override the preset's top_k (0: keep all)")
    parser.add_argument("--recall-iou", type=float, nargs="+", default=[0.5, 0.7])
    args = parser.parse_args(argv)
    ensure_subset_registered(args.dataset)  # subset names such as coco_2017_train_10pct_s0
    if args.dataset not in DatasetCatalog.list():
        parser.error(f"dataset {args.dataset!r} is not registered")
    overrides = {
        name: getattr(args, name) for name in [*FILTER_FLAGS.values(), "top_k"] if getattr(args, name) is not None
    }
    if overrides.get("top_k") == 0:
        overrides["top_k"] = None
    settings = SearchSettings(
        generator=args.generator,
        search_size=args.search_size,
        modality=args.modality,
        filter=replace(filter_preset(args.preset), **overrides),
    )
    dicts = DatasetCatalog.get(args.dataset)
    if args.merge:
        path = merge_shards(dicts, args.output, settings, args.merge)
    else:
        path = compute_proposals(dicts, args.output, settings, args.workers, args.shard)
        if args.shard:
            print(f"shard {args.shard[0]}/{args.shard[1]} -> {path}")
            return 0
    report(dicts, path, args.recall_iou)
    return 0


if __name__ == "__main__":
    sys.exit(main())
