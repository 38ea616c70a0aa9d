#!/usr/bin/env python
"""What GroupNorm costs a from-scratch detector: the same training step with each norm.

    python benchmarks/norm_cost.py --device cpu --height 512 --width 683 --iters 2 --rounds 2

detpre's from-scratch Mask R-CNN R50-FPN (``configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml``,
GN in backbone, FPN and heads) is built twice, changing only the norm of every layer
(``MODEL.RESNETS.NORM``, ``MODEL.FPN.NORM``, ``MODEL.ROI_BOX_HEAD.NORM``, ``MODEL.ROI_MASK_HEAD.NORM``):
GN and BN (what SyncBN is in one process; detpre's scratch backbone refuses FrozenBN, which
would leave a random network unnormalised). Each is timed on the same synthetic batch,
rounds interleaved; prints s/iter and the ratio GN / BN.
"""
import argparse
import torch
from detectron2.config import get_cfg
from train_step import add_step_arguments, compare_in_rounds, synthetic_batch

import detpre
from detpre.engine.trainer import DetpreTrainer

CONFIG = "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"
NORM_KEYS = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")


def model(norm: str, device: str) -> torch.nn.Module:
    cfg = get_cfg()
    detpre.add_detpre_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = device
    for key in NORM_KEYS:
        cfg.MODEL[key].NORM = norm
    torch.manual_seed(0)
    return DetpreTrainer.build_model(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    norms = ("BN", "GN")
    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    models = {norm: model(norm, args.device) for norm in norms}
    compare_in_rounds(models, {norm: batch for norm in norms}, "BN", args.rounds, args)


if __name__ == "__main__":
    main()
