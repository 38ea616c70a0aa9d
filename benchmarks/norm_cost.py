#!/usr/bin/env python
"""What GroupNorm costs a from-scratch detector: the same training step with each norm.

    python benchmarks/norm_cost.py --device cpu --height 512 --width 683 --iters 2 --rounds 2

detpre's from-scratch Mask R-CNN R50-FPN (``configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml``,
GN in backbone, FPN and heads) is built twice, changing only the norm of every layer
(``MODEL.RESNETS.NORM``, ``MODEL.FPN.NORM``, ``MODEL.ROI_BOX_HEAD.NORM``, ``MODEL.ROI_MASK_HEAD.NORM``):
GN and BN (what SyncBN is in one process; detpre's scratch backbone refuses FrozenBN, which
would leave a random network unnormalised). Each is stepped by detpre's training path (so on
a GPU in the config's mixed precision; ``--opts`` changes any key of both), on the same
synthetic batch, rounds interleaved; prints s/iter and the ratio GN / BN.
"""

import argparse

from train_step import add_step_arguments, compare_in_rounds, detpre_cfg, detpre_trainer, synthetic_batch

CONFIG = "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"
NORM_KEYS = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    trainers = {}
    for norm in ("BN", "GN"):
        norm_opts = [v for key in NORM_KEYS for v in (f"MODEL.{key}.NORM", norm)]
        trainers[norm] = detpre_trainer(detpre_cfg(CONFIG, args.device, norm_opts + args.opts), batch)
    compare_in_rounds(trainers, "BN", args.rounds, args)


if __name__ == "__main__":
    main()
