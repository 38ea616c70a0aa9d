#!/usr/bin/env python
"""Turn a box-domain pre-training checkpoint into fine-tuning weights for the plain detector.

    python tools/convert_pretrained.py output/aligndet_pretrain/model_final.pth \\
        output/aligndet_pretrain/detector.pth \\
        --config-file configs/AlignDet/finetune/faster_rcnn_R_50_FPN_1x.yaml

Keeps the online detector of a ``BoxDomainPretrainer`` checkpoint (backbone, FPN, RPN, box
heads), drops the momentum branch and the projections, and leaves out the layers
pre-training never trained (classifiers, mask and keypoint heads) and, as AlignDet's
``extract_detector_weights.py`` does, the final regression layers (``bbox_pred`` of every
ROI stage, RetinaNet's ``head.bbox_pred``) unless ``--keep-heads``, so that the fine-tuning
model initialises them itself. With ``--config-file`` (the *fine-tuning* config,
plus ``KEY VALUE`` overrides), the fine-tuning model is built to check every tensor's shape
and to report the parameters it will initialise; when more than ``--max-mismatched`` of its
tensors would be re-initialised although pre-training trained them (other shapes, absent
from the pre-trained detector: the two configs describe different models), nothing is
written and the report says which. The report (kept / dropped / re-initialised) is printed
and, with ``--report``, written as JSON.

The output is a Detectron2 checkpoint (``{"model": ...}``, exact key names) for
``MODEL.WEIGHTS`` of the fine-tuning config.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

import torch

import detpre  # noqa: F401  (registers detpre's components)
from detpre.checkpoint.reading import read_model_state
from detpre.config import ConfigError, load_cfg
from detpre.modeling.build import build_model
from detpre.modeling.meta_arch.box_domain_weights import box_domain_to_detector
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


def fine_tuning_state_dict(config_file: str, opts: Sequence[str]):
    """The state dict of the model a fine-tuning config builds (on the CPU)."""
    cfg = load_cfg(config_file, [*opts, "MODEL.DEVICE", "cpu"])
    if cfg.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer":
        raise ConfigError(f"{config_file} is a pre-training config; give the fine-tuning one.")
    return build_model(cfg, world_size=1).state_dict()


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="BoxDomainPretrainer checkpoint (.pth)")
    parser.add_argument("output", help="fine-tuning weights to write (.pth)")
    parser.add_argument("--config-file", default="", help="the fine-tuning config, to check shapes against")
    parser.add_argument("--report", default="", help="also write the report as this JSON file")
    parser.add_argument(
        "--keep-heads",
        action="store_true",
        help="keep the final regression layers too (AlignDet's --keep-heads; by default they are left out)",
    )
    parser.add_argument(
        "--max-mismatched",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="refuse when more than this fraction of the fine-tuning model's tensors would be re-initialised "
        "for another shape or absence (default %(default)s)",
    )
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the fine-tuning config")
    args = parser.parse_intermixed_args(argv)
    target = fine_tuning_state_dict(args.config_file, args.opts) if args.config_file else None
    weights, report = box_domain_to_detector(read_model_state(args.input), target, keep_heads=args.keep_heads)
    print(report.summary())
    if args.report:
        with atomic_write(args.report) as f:
            json.dump(
                {"kept": report.kept, "dropped": report.dropped, "reinitialized": report.reinitialized}, f, indent=1
            )
    if target is not None and len(report.mismatched) > args.max_mismatched * len(target):
        names = ", ".join(sorted(report.mismatched)[:5])
        raise ValueError(
            f"{args.input} and {args.config_file} describe different models: {len(report.mismatched)} of the "
            f"fine-tuning model's {len(target)} tensors would be re-initialised ({names}, ...; see the report "
            f"above), more than --max-mismatched {args.max_mismatched:g}; nothing was written."
        )
    with atomic_write(args.output, "wb") as f:
        torch.save({"model": weights, "__author__": f"detpre BoxDomainPretrainer ({args.input})"}, f)
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
