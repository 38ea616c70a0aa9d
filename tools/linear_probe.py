#!/usr/bin/env python
"""Linear probe of a detector's backbone on an image-folder classification dataset.

    # a Detectron2 / detpre detector: its config and checkpoint
    python tools/linear_probe.py --config-file configs/X.yaml --weights output/X/model_final.pth \
        --data datasets/caltech256 --stages res4 res5
    # a torchvision classifier, converted first (tools/convert_weights.py --config-out r50.yaml)
    python tools/linear_probe.py --config-file r50.yaml --data datasets/flowers102

The dataset is ``ROOT/<class>/<image>`` (Caltech-256, SUN-397, Flowers-102 layouts), split
into stratified train / validation / test parts (or tested on ``--test-data``). For each
stage, globally average-pooled features are extracted once (cached under ``--cache-dir``),
a logistic regression is fitted for each C, the C with the best validation top-1 is refit on
train + validation, and test top-1 and mean per-class accuracy are reported.
"""

import argparse
import json
import os
import sys

import torch

from detpre.analysis.probe import DEFAULT_CS, run_probe
from detpre.config import load_cfg
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="config describing the backbone")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the config's MODEL.WEIGHTS)")
    parser.add_argument("--data", required=True, help="image-folder dataset ROOT/<class>/<image>")
    parser.add_argument("--test-data", default="", help="separate test folder (then --test-fraction is unused)")
    parser.add_argument("--stages", nargs="+", default=["res4", "res5"])
    parser.add_argument("--size", type=int, default=224, help="shorter side resize, then centre crop (px)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--cache-dir", default="output/feature_cache", help="'' disables the feature cache")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--cs", type=float, nargs="+", default=list(DEFAULT_CS), help="regularizations tried")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--output", default="", help="write the results as JSON here")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    cfg = load_cfg(args.config_file, args.opts)
    weights = cfg.MODEL.WEIGHTS if args.weights is None else args.weights
    if weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint {weights!r} does not exist")
    results = run_probe(
        cfg,
        weights,
        args.data,
        args.stages,
        args.cache_dir or None,
        test_data=args.test_data,
        size=args.size,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        cs=args.cs,
        seed=args.seed,
        device=torch.device(args.device) if args.device else None,
    )
    print(f"linear probe of {weights or 'the config initialization'} on {args.data}")
    print(f"{'stage':<6} {'C':>8} {'top-1':>7} {'mean/class':>10}  (train/val/test)")
    for stage, r in results.items():
        print(
            f"{stage:<6} {r.c:>8.0e} {100 * r.top1:>6.2f}% {100 * r.mean_per_class:>9.2f}%  "
            f"({r.n_train}/{r.n_val}/{r.n_test})"
        )
    if args.output:
        report = {"weights": weights, "data": args.data, "stages": {s: r.to_dict() for s, r in results.items()}}
        with atomic_write(args.output) as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
