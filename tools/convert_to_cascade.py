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
from detpre.checkpoint.cascade_seed import seed_cascade_from_single_head
from detpre.checkpoint.reading import CheckpointError, load_checkpoint_file, read_model_state
from detpre.config import ConfigError, load_cfg
from detpre.modeling.build import build_model
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


def single_head_state(path: str) -> dict:
    """The model state of a Detectron2 ``.pth`` or Detectron2-model-zoo ``.pkl`` file."""
    if path.endswith(".pkl"):
        data = load_checkpoint_file(path)
        if not (isinstance(data, dict) and "model" in data and "__author__" in data):
            raise CheckpointError(
                f"{path} is a Caffe2/Detectron checkpoint, whose names Detectron2 only maps by "
                "heuristics: load it into the single-head model with DetectionCheckpointer, "
                "save it as .pth, and convert that."
            )
    return read_model_state(path)


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
    model = build_model(cfg, world_size=1)
    if not hasattr(model, "roi_heads") or not hasattr(model.roi_heads, "num_cascade_stages"):
        raise ConfigError(
            f"{args.config_file} builds no cascade ROI heads (MODEL.ROI_HEADS.NAME is {cfg.MODEL.ROI_HEADS.NAME!r})"
        )
    target = model.state_dict()
    try:
        seeded, report = seed_cascade_from_single_head(
            single_head_state(args.input),
            num_stages=model.roi_heads.num_cascade_stages,
            single_reg_weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS,
            stage_reg_weights=cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS,
            expected_shapes={k: tuple(v.shape) for k, v in target.items()},
        )
    except TypeError as e:
        raise CheckpointError(f"{args.input}: {e}") from None
    if not report.seeded:
        raise CheckpointError(
            f"{args.input} has no single-head box keys (roi_heads.box_head.<layer>.*, "
            "roi_heads.box_predictor.*): nothing to convert"
        )
    seeded = {k: torch.as_tensor(v) for k, v in seeded.items()}
    incompatible = model.load_state_dict(seeded, strict=False)
    with atomic_write(args.output, "wb") as f:
        torch.save({"model": seeded}, f)

    print(report.format())
    missing = [k for k in incompatible.missing_keys if k not in ("pixel_mean", "pixel_std")]
    if missing:
        print(f"Keys of the cascade model not in {args.input} ({len(missing)}, left at init):")
        print("\n".join(f"  {k}" for k in missing))
    if incompatible.unexpected_keys:
        print(f"Keys of {args.input} the cascade model does not use ({len(incompatible.unexpected_keys)}):")
        print("\n".join(f"  {k}" for k in incompatible.unexpected_keys))
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
