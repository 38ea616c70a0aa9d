#!/usr/bin/env python
"""Two backbones on the same images: neighbour overlap, linear CKA and activation maps.

    python tools/compare_backbones.py \
        --a-name detection --a-config configs/X.yaml --a-weights output/X/model_final.pth \
        --b-name imagenet --b-config r50_torchvision.yaml \
        --images datasets/coco/val2017_500 --stages res4 res5 --k 5 --big-k 20 \
        --maps img1.jpg img2.jpg --map-stage res4 --output-dir output/compare
    # KAIST: the visible and the thermal frame of one pair, side by side
    ... --pair set06/V000/visible/I00000.jpg set06/V000/lwir/I00000.jpg

A backbone of a multispectral config (``INPUT.FORMAT`` BGRT, BGRTTT, TTT) reads visible +
LWIR pairs (``.../visible/<frame>`` beside ``.../lwir/<frame>``, KAIST's layout): ``--images``
then lists pairs by their visible frame, and any frame given to ``--maps`` / ``--pair`` stands
for its pair; each map is drawn over the frame it was given.

For every stage, pooled features of both backbones on ``--images`` (cached) give:
 - the k-NN overlap in both directions: of each image's ``k`` nearest neighbours in one
   space, the fraction found among its ``big_k`` nearest in the other (Li et al.'s
   asymmetry: detection neighbours are classification neighbours, not the reverse);
 - linear CKA between every stage of A and every stage of B.
Activation maps (channel sum and top channel of ``--map-stage``) of both backbones on the
``--maps`` images or the ``--pair`` frames are drawn side by side. Everything is written
to ``--output-dir`` (comparison.json, activation_maps.png) and summarized on stdout.
"""

import argparse
import json
import os
import sys

import torch

from detpre.analysis.compare import Backbone, compare_features, draw_maps
from detpre.config import load_cfg
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


def backbone_args(parser: argparse.ArgumentParser, side: str) -> None:
    parser.add_argument(f"--{side}-name", default=side.upper(), help=f"label of backbone {side.upper()}")
    parser.add_argument(f"--{side}-config", default="", help="its config file")
    parser.add_argument(f"--{side}-weights", default=None, help="its checkpoint (default: the config's MODEL.WEIGHTS)")
    parser.add_argument(f"--{side}-opts", nargs="*", default=[], metavar="KEY VALUE", help="its config overrides")


def backbone_from(args: argparse.Namespace, side: str) -> Backbone:
    cfg = load_cfg(getattr(args, f"{side}_config"), getattr(args, f"{side}_opts"))
    weights = getattr(args, f"{side}_weights")
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint {weights!r} of backbone {side.upper()} does not exist")
    return getattr(args, f"{side}_name"), cfg, weights


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    backbone_args(parser, "a")
    backbone_args(parser, "b")
    parser.add_argument("--images", default="", help="folder of images (recursive) for k-NN overlap and CKA")
    parser.add_argument("--stages", nargs="+", default=["res4", "res5"])
    parser.add_argument("--k", type=int, default=5, help="neighbours of an image in the first space")
    parser.add_argument("--big-k", type=int, default=20, help="neighbourhood searched in the second space")
    parser.add_argument("--size", type=int, default=224, help="input size for pooled features")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", default="output/feature_cache", help="'' disables the feature cache")
    parser.add_argument("--maps", nargs="*", default=[], help="images to draw activation maps on")
    parser.add_argument("--pair", nargs=2, metavar=("VISIBLE", "THERMAL"), help="a KAIST frame pair for the maps")
    parser.add_argument("--map-stage", default="res4")
    parser.add_argument("--map-size", type=int, default=448, help="shorter side of images for the maps")
    parser.add_argument("--device", default="", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--output-dir", default="output/compare")
    args = parser.parse_args(argv)
    if not args.images and not args.maps and not args.pair:
        parser.error("nothing to do: give --images, --maps or --pair")
    device = torch.device(args.device) if args.device else None
    report: dict = {}
    a, b = backbone_from(args, "a"), backbone_from(args, "b")
    report["backbones"] = {name: weights for name, _, weights in (a, b)}
    if args.images:
        report.update(
            compare_features(
                a,
                b,
                args.images,
                args.stages,
                args.k,
                args.big_k,
                args.cache_dir or None,
                args.size,
                args.batch_size,
                device,
            )
        )
    images = [(os.path.basename(p), p) for p in args.maps]
    if args.pair:
        images += [("visible", args.pair[0]), ("thermal", args.pair[1])]
    if images:
        png = os.path.join(args.output_dir, "activation_maps.png")
        maps = draw_maps((a, b), images, args.map_stage, png, args.map_size, device)
        report["top_channels"] = {name: [m.top_channel for m in per] for name, per in maps.items()}
        report["activation_maps"] = png
    (na, _, _), (nb, _, _) = a, b
    for stage, o in report.get("knn", {}).items():
        print(
            f"{stage}: k-NN overlap (k={args.k} in K={args.big_k})  {na}->{nb} {o['a_to_b']:.3f}  "
            f"{nb}->{na} {o['b_to_a']:.3f}"
        )
    for sa, row in report.get("cka", {}).items():
        print(f"linear CKA {na}.{sa} vs " + "  ".join(f"{nb}.{sb} {v:.3f}" for sb, v in row.items()))
    if "activation_maps" in report:
        print(f"activation maps written to {report['activation_maps']}")
    with atomic_write(os.path.join(args.output_dir, "comparison.json")) as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
