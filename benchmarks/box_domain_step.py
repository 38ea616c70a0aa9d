#!/usr/bin/env python
"""Cost of one box-domain pre-training step against one supervised step of the same detector.

    python benchmarks/box_domain_step.py --device cpu --iters 3 --height 512 --width 683

The detector is the R-CNN R50-FPN of ``configs/AlignDet/pretrain/faster_rcnn_R_50_FPN.yaml``
with a GN backbone (``--norm``: random FrozenBN weights diverge), stepped by detpre's
training path (on a GPU in the config's mixed precision; ``--opts`` changes any key of every
side). Both sides take the same synthetic images with the same boxes: the supervised step
trains the plain detector on them as labels; the box-domain step (``BoxDomainPretrainer``: online
detector on view 1, momentum detector without gradient on view 2, contrastive and regression
losses, EMA update) takes them as proposals, the second view flipped. It is timed with the
ImageNet backbone frozen (AlignDet's default) and trained (``FREEZE_BACKBONE False``).
Prints seconds per iteration of each and the ratio to the supervised step (goal < 1.6),
all taken in this run, interleaved so that machine load hits every side alike.
"""

import argparse
import copy
from typing import Dict, List

import torch
from detectron2.config import CfgNode
from train_step import add_step_arguments, compare_in_rounds, detpre_cfg, detpre_trainer, synthetic_batch

PRETRAIN = "configs/AlignDet/pretrain/faster_rcnn_R_50_FPN.yaml"


def two_views(batch: List[Dict]) -> List[Dict]:
    """Each image as two views whose instances are its boxes as proposals (flipped in view 2)."""
    out = []
    for x in batch:
        instances = x["instances"]
        instances.gt_ids = torch.arange(len(instances))
        flipped = copy.deepcopy(instances)
        width = x["width"]
        boxes = flipped.gt_boxes.tensor
        flipped.gt_boxes.tensor = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        out.append({"views": [dict(x, instances=instances), dict(x, image=x["image"].flip(-1), instances=flipped)]})
    return out


def side_cfg(args: argparse.Namespace, side: str) -> CfgNode:
    # Random init: the cost does not depend on it. A randomly initialised FrozenBN ResNet has
    # no normalisation at all and diverges within a few steps; GN (as detpre's from-scratch
    # configs) keeps random weights trainable. The LR is cut 100-fold: the same batch stepped again
    # round after round at the pre-training's 0.02 diverged to NaN on the box-domain side (AlignDet's
    # 4096-RoI regression on random weights); what a step costs does not depend on the LR.
    opts = [
        "SOLVER.BASE_LR",
        "0.0002",
        "MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS",
        "",
        "MODEL.RESNETS.NORM",
        args.norm,
        "MODEL.BOX_DOMAIN.FREEZE_BACKBONE",
        str(side == "box-domain, frozen backbone"),
    ]
    cfg = detpre_cfg(PRETRAIN, args.device, opts + args.opts)
    if side == "supervised":  # the wrapped detector alone
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved measurements of each side")
    parser.add_argument("--norm", default="GN", help="MODEL.RESNETS.NORM of the backbone (both sides)")
    args = parser.parse_args()

    sides = ("supervised", "box-domain, frozen backbone", "box-domain, trained backbone")
    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    for x in batch:
        x["instances"].gt_classes.zero_()  # one class, as the pre-training config has
    trainers = {}
    for side in sides:
        inputs = batch if side == "supervised" else two_views(copy.deepcopy(batch))
        trainers[side] = detpre_trainer(side_cfg(args, side), inputs)
    compare_in_rounds(trainers, "supervised", args.rounds, args)


if __name__ == "__main__":
    main()
