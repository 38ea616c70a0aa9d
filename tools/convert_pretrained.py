#!/usr/bin/env python
"""Turn a pre-training checkpoint into fine-tuning weights for the plain detector.

    # box-domain pre-training (BoxDomainPretrainer): the whole detector
    python tools/convert_pretrained.py output/aligndet_pretrain/model_final.pth \\
        output/aligndet_pretrain/detector.pth \\
        --config-file configs/AlignDet/finetune/faster_rcnn_R_50_FPN_1x.yaml
    # image-domain pre-training (ImageDomainPretrainer): the backbone
    python tools/convert_pretrained.py output/ssl/kaist_mocov2/model_final.pth \\
        output/ssl/kaist_mocov2/backbone.pth \\
        --config-file configs/KAIST/faster_rcnn_R_50_FPN_early_fusion_gn_mocov2.yaml

The kind of checkpoint is told by its keys. A ``BoxDomainPretrainer`` checkpoint gives its
online detector (backbone, FPN, RPN, box heads): the momentum branch and the projections are
dropped, and so are the layers pre-training never trained (classifiers, mask and keypoint
heads) and, as AlignDet's ``extract_detector_weights.py`` does, the final regression layers
(``bbox_pred`` of every ROI stage, RetinaNet's ``head.bbox_pred``) unless ``--keep-heads``,
so that the fine-tuning model initialises them itself. An ``ImageDomainPretrainer``
checkpoint gives its query encoder's backbone network under the detector's names
(``backbone.bottom_up.*``): key encoder, projection heads and queues are dropped; FPN and
heads keep the fine-tuning model's initialization. Those weights serve as ``MODEL.WEIGHTS``
of a fine-tuning config, or as ``MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS`` of a box-domain
pre-training config (the next stage of the target-only chain).

With ``--config-file`` (the config the weights are for, plus ``KEY VALUE`` overrides: the
fine-tuning config, or for image-domain weights a box-domain pre-training config, whose
wrapped detector is then the target), that model is built to check every tensor's shape and
to report the parameters it will initialise; when more than ``--max-mismatched`` of its
tensors would be re-initialised although pre-training should have provided them (other
shapes, absent from the checkpoint: the two configs describe different models), nothing is
written and the report says which. The report (kept / dropped / re-initialised) is printed
and, with ``--report``, written as JSON.

The output is a Detectron2 checkpoint (``{"model": ...}``, exact key names).
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
from detpre.modeling.meta_arch.pretrained_weights import PRETRAINERS, convert_pretrained, pretrainer_of
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


def fine_tuning_state_dict(config_file: str, opts: Sequence[str], kind: str):
    """The state dict of the model that ``kind``'s weights are for (built on the CPU): the
    fine-tuning config's model or, for image-domain weights, the detector a box-domain
    pre-training config wraps."""
    cfg = load_cfg(config_file, [*opts, "MODEL.DEVICE", "cpu"], freeze=False)
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "BoxDomainPretrainer" and kind == "ImageDomainPretrainer":
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE
    elif arch in PRETRAINERS:
        raise ConfigError(f"{config_file} is a pre-training config; give the fine-tuning one.")
    return build_model(cfg, world_size=1).state_dict()


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="ImageDomainPretrainer or BoxDomainPretrainer checkpoint (.pth)")
    parser.add_argument("output", help="fine-tuning weights to write (.pth)")
    parser.add_argument("--config-file", default="", help="the config the weights are for, to check shapes against")
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
    state = read_model_state(args.input)
    try:
        kind = pretrainer_of(state)
    except ValueError as e:
        raise ValueError(f"{args.input}: {e}") from e
    target = fine_tuning_state_dict(args.config_file, args.opts, kind) if args.config_file else None
    weights, report = convert_pretrained(state, target, keep_heads=args.keep_heads)
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
        torch.save({"model": weights, "__author__": f"detpre {kind} ({args.input})"}, f)
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
