#!/usr/bin/env python
"""Turn a single-head (Mask/Faster R-CNN) checkpoint into a Cascade R-CNN checkpoint.

    python tools/convert_to_cascade.py output/mask_rcnn/model_final.pth cascade_init.pth \
        --config-file configs/COCO-Scratch/cascade_mask_rcnn_R_50_FPN_6x_gn_scratch.yaml

Every cascade stage's box head and predictor are seeded from the single head (class-agnostic
regressor = mean of the per-class ones, rows rescaled by the stages' BBOX_REG_WEIGHTS; see
``detpre.checkpoint.cascade_seed``); everything else is copied. The output holds only
``{"model": state_dict}``: the single-head run's optimizer and scheduler state describe
another model and must not be resumed into the cascade. The cascade model of the config is
built on the CPU to check every key and shape, and the keys it would still miss are listed.

``SeededCascadeROIHeads`` does the same on the fly when MODEL.WEIGHTS is a single-head
checkpoint; this tool is for stock ``CascadeROIHeads`` and for inspecting the result.
"""

import argparse
import sys

import torch

import detpre  # noqa: F401  (registers detpre's backbones and heads)
from detpre.config import load_cfg
from detpre.modeling.roi_heads.cascade_conversion import convert_to_cascade
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", help="single-head checkpoint (.pth, or a Detectron2 model-zoo .pkl)")
    parser.add_argument("output", metavar="OUT", help="cascade checkpoint to write (.pth)")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the cascade model's config")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, after IN OUT")
    args = parser.parse_intermixed_args(argv)
    if not args.output.endswith(".pth"):
        parser.error(f"OUT must end with .pth (Detectron2 reads .pkl files as Caffe2 models): {args.output}")

    cfg = load_cfg(args.config_file, [*args.opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    converted = convert_to_cascade(args.input, cfg)
    with atomic_write(args.output, "wb") as f:
        torch.save({"model": converted.state}, f)

    print(converted.report.format())
    if converted.missing:
        print(f"Keys of the cascade model not in {args.input} ({len(converted.missing)}, left at init):")
        print("\n".join(f"  {k}" for k in converted.missing))
    if converted.unexpected:
        print(f"Keys of {args.input} the cascade model does not use ({len(converted.unexpected)}):")
        print("\n".join(f"  {k}" for k in converted.unexpected))
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
