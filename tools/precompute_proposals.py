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

``--generator`` is a source spec (``detpre.data.proposals.sources``): a box generator
(``soco``, AlignDet's; ``opencv_fast``, ``opencv_quality``; on the thermal frame
``thermal_blobs``, ``thermal_mser``), a registered union (``kaist_thermal``,
``kaist_multispectral``) or ``NAME[@FRAME]`` parts joined by ``+``, their boxes fused by one
NMS; ``--preset`` a filter (``coco_aligndet``, AlignDet's; ``detpre_v1``;
``kaist_pedestrian``); filter flags override single rules of the preset. ``--search-size``
searches a copy whose longer side is that many pixels (0: the image itself, as SoCo).
``--modality`` picks the frame of multispectral datasets (``lwir_file_name``) for the sources
that name none: ``visible``, ``lwir`` or ``both``.

``--config-file`` (with trailing ``KEY VALUE`` overrides) takes those four from the config's
``DATASETS.PROPOSAL_SEARCH`` keys, and the dataset and output from its ``DATASETS.TRAIN``
and ``DATASETS.PROPOSAL_FILES_TRAIN``: the file a box-domain pre-training config trains on,
made as it says. Flags override the config. KAIST's pedestrians (docs/kaist_proposals.md):

    python tools/precompute_proposals.py --workers 16 \
        --config-file configs/AlignDet/KAIST/pretrain_faster_rcnn_R_50_FPN_early_fusion_gn_imagenet.yaml
    # the same, spelled out
    python tools/precompute_proposals.py --dataset kaist_train_all02_paired \
        --generator kaist_thermal --preset kaist_pedestrian \
        --output datasets/proposals/kaist_train_all02_paired_kaist_thermal.pkl

The same images and settings give the same file, byte for byte, whatever ``--workers`` and
``--shard``. Resumable: finished images are journaled in ``<output>.partial`` (per shard:
``<shard file>.partial``); a restarted run with the same settings skips them. When the dataset
has annotations, the run reports the recall of the annotated objects at ``--recall-iou``.
"""

import argparse
import os
import sys
from dataclasses import replace
from typing import Optional, Sequence, Tuple

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

import detpre  # noqa: F401  (registers detpre's datasets)
from detpre.config import load_cfg
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposals import (
    FILTER_PRESETS,
    MODALITIES,
    PROPOSAL_GENERATORS,
    PROPOSAL_UNIONS,
    compute_proposals,
    ground_truth_boxes,
    load_proposals_into_dicts,
    merge_shards,
    parse_shard,
    proposal_coverage,
    settings_from_cfg,
)
from detpre.utils.cli import cli_main

#: Filter flags: flag -> ProposalFilter field.
FILTER_FLAGS = {
    "--min-side": "min_side",
    "--max-aspect-ratio": "max_aspect_ratio",
    "--min-relative-size": "min_relative_size",
    "--max-relative-size": "max_relative_size",
    "--nms": "nms_threshold",
    "--min-height": "min_height",
    "--min-aspect-ratio": "min_aspect_ratio",
}
#: Search flags: flag destination -> DATASETS.PROPOSAL_SEARCH key.
SEARCH_FLAGS = {"generator": "GENERATOR", "modality": "MODALITY", "preset": "PRESET", "search_size": "SIZE"}


def config_default(
    parser: argparse.ArgumentParser, cfg: CfgNode, dataset: Optional[str], output: Optional[str]
) -> Tuple[str, str]:
    """``(dataset, output)``: the flags, else the config's only DATASETS.TRAIN dataset and its
    DATASETS.PROPOSAL_FILES_TRAIN file."""
    train, files = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.PROPOSAL_FILES_TRAIN)
    if dataset is None:
        if len(train) != 1:
            parser.error(f"--dataset is required, or a --config-file whose DATASETS.TRAIN names one (not {train})")
        dataset = train[0]
    if output is None:
        if dataset not in train or len(files) != len(train):
            parser.error(
                f"--output is required: the config's DATASETS.PROPOSAL_FILES_TRAIN has no file for {dataset!r}"
            )
        output = files[train.index(dataset)]
    return dataset, output


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
    parser.add_argument("--config-file", default="", metavar="FILE", help="a config (DATASETS.PROPOSAL_SEARCH ...)")
    parser.add_argument("--dataset", help="a registered dataset, e.g. coco_2017_train (default: the config's)")
    parser.add_argument("--output", help="the proposal file: .json (AlignDet/COCO) or .pkl (Detectron2)")
    parser.add_argument(
        "--generator",
        help=f"a generator ({', '.join(sorted(PROPOSAL_GENERATORS))}), a union ({', '.join(sorted(PROPOSAL_UNIONS))}) "
        "or NAME[@FRAME] joined by '+' (e.g. thermal_blobs@lwir+soco@visible; FRAME: visible, lwir or both, "
        "default --modality); default soco",
    )
    parser.add_argument("--preset", choices=sorted(FILTER_PRESETS), help="default coco_aligndet")
    parser.add_argument("--search-size", type=int, help="longer side of the searched copy (default 0: as is)")
    parser.add_argument("--modality", choices=MODALITIES, help="the frame of sources without @FRAME (default visible)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shard", type=parse_shard, metavar="I/N", help="compute only block I of N (0-based)")
    group.add_argument("--merge", type=int, metavar="N", help="write the output from its N shard files")
    for flag, name in FILTER_FLAGS.items():
        parser.add_argument(flag, type=float, dest=name, help=f"override the preset's {name}")
    parser.add_argument("--top-k", type=int, dest="top_k", help="override the preset's top_k (0: keep all)")
    parser.add_argument("--recall-iou", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    flags = [
        word
        for dest, key in SEARCH_FLAGS.items()
        if getattr(args, dest) is not None
        for word in (f"DATASETS.PROPOSAL_SEARCH.{key}", str(getattr(args, dest)))
    ]
    cfg = load_cfg(args.config_file, [*args.opts, *flags])
    dataset, output = config_default(parser, cfg, args.dataset, args.output)
    ensure_subset_registered(dataset)  # subset names such as coco_2017_train_10pct_s0
    if dataset not in DatasetCatalog.list():
        parser.error(f"dataset {dataset!r} is not registered")
    overrides = {
        name: getattr(args, name) for name in [*FILTER_FLAGS.values(), "top_k"] if getattr(args, name) is not None
    }
    if overrides.get("top_k") == 0:
        overrides["top_k"] = None
    settings = settings_from_cfg(cfg)
    settings = replace(settings, filter=replace(settings.filter, **overrides))
    dicts = DatasetCatalog.get(dataset)
    if args.merge:
        path = merge_shards(dicts, output, settings, args.merge)
    else:
        path = compute_proposals(dicts, output, settings, args.workers, args.shard)
        if args.shard:
            print(f"shard {args.shard[0]}/{args.shard[1]} -> {path}")
            return 0
    report(dicts, path, args.recall_iou)
    return 0


if __name__ == "__main__":
    sys.exit(main())
