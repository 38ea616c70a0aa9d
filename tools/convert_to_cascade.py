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
import pickle
import sys
from typing import Dict

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

import detpre  # noqa: F401  (registers detpre's backbones and heads)
from detpre import add_detpre_config
from detpre.checkpoint.cascade_seed import seed_cascade_from_single_head
from detpre.modeling.norm import resolve_sync_norm
from detpre.utils.file_io import atomic_write


def read_model_state(path: str) -> Dict[str, object]:
    """The model state dict of a Detectron2 ``.pth`` or Detectron2-model-zoo ``.pkl`` file."""
    local = PathManager.get_local_path(path)
    if local.endswith(".pkl"):
        with open(local, "rb") as f:
            data = pickle.load(f, encoding="latin1")
        if not (isinstance(data, dict) and "model" in data and "__author__" in data):
            raise ValueError(
                f"{path} is a Caffe2/Detectron checkpoint, whose names Detectron2 only maps by "
                "heuristics: load it into the single-head model with DetectionCheckpointer, "
                "save it as .pth, and convert that."
            )
        return data["model"]
    data = torch.load(local, map_location="cpu")
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(data).__name__}).")
    return data.get("model", data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", help="single-head checkpoint (.pth, or a Detectron2 model-zoo .pkl)")
    parser.add_argument("output", metavar="OUT", help="cascade checkpoint to write (.pth)")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the cascade model's config")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, after IN OUT")
    args = parser.parse_intermixed_args(argv)
    if not args.output.endswith(".pth"):
        parser.error(f"OUT must end with .pth (Detectron2 reads .pkl files as Caffe2 models): {args.output}")

    cfg = get_cfg()
    add_detpre_config(cfg)
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    except (AssertionError, KeyError, ValueError) as e:
        print(f"error: invalid config {args.config_file} {args.opts}: {e}", file=sys.stderr)
        return 2
    model = build_model(resolve_sync_norm(cfg, world_size=1))
    if not hasattr(model, "roi_heads") or not hasattr(model.roi_heads, "num_cascade_stages"):
        print(
            f"error: {args.config_file} builds no cascade ROI heads (MODEL.ROI_HEADS.NAME is "
            f"{cfg.MODEL.ROI_HEADS.NAME!r})",
            file=sys.stderr,
        )
        return 2
    target = model.state_dict()
    try:
        state = read_model_state(args.input)
        seeded, report = seed_cascade_from_single_head(
            state,
            num_stages=model.roi_heads.num_cascade_stages,
            single_reg_weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS,
            stage_reg_weights=cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS,
            expected_shapes={k: tuple(v.shape) for k, v in target.items()},
        )
    except (OSError, ValueError, TypeError, pickle.UnpicklingError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 2
    if not report.seeded:
        print(
            f"error: {args.input} has no single-head box keys (roi_heads.box_head.<layer>.*, "
            "roi_heads.box_predictor.*): nothing to convert",
            file=sys.stderr,
        )
        return 2
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
