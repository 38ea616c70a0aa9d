#!/usr/bin/env python
"""Convert a torchvision or timm ResNet checkpoint into a Detectron2-loadable file.

    python tools/convert_weights.py resnet50-0676ba61.pth r50_torchvision.pkl --format torchvision \
        --config-out r50_torchvision.yaml

The output (``.pkl`` or ``.pth``) loads with ``MODEL.WEIGHTS`` into any Detectron2 ResNet
detector. The tool loads it into a Detectron2 ResNet built from the architecture it reads
off the weights and prints the missing / unexpected keys (none for a plain ResNet), then the
config values the weights need (``STRIDE_IN_1X1 False``, RGB, ImageNet pixel statistics,
depth and width); ``--config-out`` writes them as a YAML file to merge or pass as
``--config-file`` to ``tools/linear_probe.py`` and ``tools/compare_backbones.py``.
Exits 1 when the load is incomplete.
"""

import argparse
import sys

import yaml

from detpre.checkpoint.convert import (
    FORMATS,
    build_resnet,
    convert_resnet_state_dict,
    load_into,
    read_state_dict,
    resnet_config,
    save_detectron2_checkpoint,
)
from detpre.config.loader import as_overrides, nest_keys
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="torchvision / timm checkpoint (.pth, .pth.tar, .bin)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pkl or .pth)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="where the input comes from")
    parser.add_argument("--config-out", default="", help="also write the config values as this YAML file")
    args = parser.parse_args(argv)
    try:
        converted, dropped = convert_resnet_state_dict(read_state_dict(args.input, args.format))
        values = resnet_config(converted)
    except ValueError as e:
        raise ValueError(f"{args.input}: {e}") from None
    save_detectron2_checkpoint(converted, args.output, author=args.format)
    report = load_into(build_resnet(values), converted)
    print(f"{args.input} ({args.format}): {len(converted)} tensors -> {args.output}")
    print(f"left out on purpose (classifier, BN counters): {len(dropped)}")
    depth = values["MODEL.RESNETS.DEPTH"]
    for label, keys in (
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        ("wrong shape", report.wrong_shape),
    ):
        print(f"loaded into a Detectron2 R{depth}: {len(keys)} {label} key(s)" + (f": {keys}" if keys else ""))
    print("config:", " ".join(as_overrides(values)))
    if args.config_out:
        with atomic_write(args.config_out) as f:
            yaml.safe_dump(nest_keys({"MODEL.WEIGHTS": args.output, **values}), f)
        print(f"config values written to {args.config_out}")
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
