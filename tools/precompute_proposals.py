#!/usr/bin/env python
"""Selective-search proposals of a registered dataset, written as a Detectron2 proposal file.

    python tools/precompute_proposals.py --dataset coco_2017_train \\
        --output datasets/proposals/coco_2017_train_ss.pkl --workers 16

The file holds ``ids``, ``boxes`` (XYXY_ABS, original image pixels), ``objectness_logits``
(the selective-search rank) and ``bbox_mode``, which is what Detectron2 reads from
``DATASETS.PROPOSAL_FILES_TRAIN`` when ``MODEL.LOAD_PROPOSALS`` is on: the boxes land in
each dataset dict as ``proposal_boxes``, next to (and never mixed with) its annotations,
for ``TwoViewDatasetMapper`` and ``BoxDomainPretrainer`` (configs/AlignDet). A proposal
file rather than a new annotation json, because it works for every registered dataset
(COCO subsets, KAIST) without re-registering anything, and because pre-training provably
never sees a ground-truth box.

Filtering is AlignDet's (``detpre.data.proposals.ProposalFilter``). ``--modality`` picks the
frame searched in multispectral datasets (``lwir_file_name``): ``visible``, ``lwir``, or
``both`` (the two ranked lists interleaved, then filtered together).

Resumable: each finished image is appended to ``<output>.partial``; a restarted run with
the same settings skips those images, and the journal is removed once the file is written.
When the dataset has annotations, the run ends by reporting how many ground-truth boxes
the proposals cover at IoU 0.5 (``--coverage-iou``).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog

import detpre  # noqa: F401  (registers detpre's datasets)
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposal_files import MODALITIES, SearchSettings, compute_proposals, ground_truth_boxes
from detpre.data.proposals import ProposalFilter, proposal_coverage
from detpre.utils.cli import cli_main


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. coco_2017_train")
    parser.add_argument("--output", required=True, help="the proposal file (.pkl) to write")
    parser.add_argument("--modality", default="visible", choices=MODALITIES)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--max-size", type=int, default=500, help="longer side of the searched copy")
    parser.add_argument("--quality", action="store_true", help="selective search's quality mode (slow)")
    default = ProposalFilter()
    parser.add_argument("--top-k", type=int, default=default.top_k)
    parser.add_argument("--max-aspect-ratio", type=float, default=default.max_aspect_ratio)
    parser.add_argument("--min-relative-size", type=float, default=default.min_relative_size)
    parser.add_argument("--max-relative-size", type=float, default=default.max_relative_size)
    parser.add_argument("--nms", type=float, default=default.nms_threshold)
    parser.add_argument("--coverage-iou", type=float, default=0.5)
    args = parser.parse_args(argv)
    ensure_subset_registered(args.dataset)  # subset names such as coco_2017_train_10pct_s0
    if args.dataset not in DatasetCatalog.list():
        parser.error(f"dataset {args.dataset!r} is not registered")
    settings = SearchSettings(
        modality=args.modality,
        max_size=args.max_size,
        fast=not args.quality,
        filter=ProposalFilter(
            max_aspect_ratio=args.max_aspect_ratio,
            min_relative_size=args.min_relative_size,
            max_relative_size=args.max_relative_size,
            nms_threshold=args.nms,
            top_k=args.top_k,
        ),
    )
    dicts = DatasetCatalog.get(args.dataset)
    proposals = compute_proposals(dicts, args.output, settings, args.workers)
    counts = [len(b) for b in proposals["boxes"]]
    print(f"{args.dataset}: {len(counts)} images, {np.mean(counts):.1f} proposals/image -> {args.output}")
    gt = [ground_truth_boxes(d) for d in dicts]
    if any(g is not None for g in gt):
        cov = proposal_coverage(
            proposals["boxes"], [g if g is not None else np.zeros((0, 4)) for g in gt], args.coverage_iou
        )
        share = cov["covered"] / max(cov["total"], 1)
        print(
            f"coverage: {cov['covered']} of {cov['total']} ground-truth boxes ({share:.1%}) have a proposal "
            f"at IoU >= {args.coverage_iou}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
