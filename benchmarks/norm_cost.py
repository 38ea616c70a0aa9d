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
from typing import Dict, List

import torch
from detectron2.config import get_cfg
from train_step import synthetic_batch, time_training

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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ims-per-batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    args = parser.parse_args()

    norms = ("BN", "GN")
    models = {norm: model(norm, args.device) for norm in norms}
    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    times: Dict[str, List[float]] = {norm: [] for norm in norms}
    for _ in range(args.rounds):
        for norm in norms:
            times[norm].append(time_training(models[norm], batch, args.iters, args.warmup, args.device))
    base = min(times["BN"])
    for norm in norms:
        best = min(times[norm])
        print(f"{norm:>9}: {best:.3f} s/iter, {args.ims_per_batch / best:.3f} images/s, {best / base:.2f}x BN")
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"batch={args.ims_per_batch} size={args.height}x{args.width}")


if __name__ == "__main__":
    main()
