#!/usr/bin/env python
"""Write a deterministic subset of a registered dataset as a COCO json.

    python tools/make_subset.py --dataset coco_2017_train --size 10k --seed 0 \
        --output datasets/coco/annotations/instances_train2017_10k_s0.json

The subset is the one ``coco_2017_train_10k_s0`` names in every config (see
``detpre.data.datasets.subsets``): 10,000 trainable images, those the training loader keeps;
``--unfiltered`` counts every image (``coco_2017_train_10k_unfiltered_s0``). Where the source
was registered from a COCO json, that json is filtered, so every field (masks, keypoints,
licences) survives; otherwise the dataset dicts are converted with Detectron2's
``convert_to_coco_dict``.
"""

import argparse
import json
import sys

from detectron2.data import DatasetCatalog

import detpre  # noqa: F401  (registers detpre's datasets)
from detpre.data.datasets.subsets import register_subset, subset_coco_dict
from detpre.utils.cli import cli_main
from detpre.utils.file_io import atomic_write


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. coco_2017_train")
    parser.add_argument("--size", required=True, help="image count (1000, 10k, 3.5k) or percentage (10pct)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unfiltered", action="store_true", help="count every image, not only those with a usable non-crowd box"
    )
    parser.add_argument("--output", required=True, help="COCO json to write")
    args = parser.parse_args(argv)
    if args.dataset not in DatasetCatalog.list():
        parser.error(f"dataset {args.dataset!r} is not registered")
    name = register_subset(args.dataset, args.size, args.seed, unfiltered=args.unfiltered)
    coco = subset_coco_dict(args.dataset, name)
    with atomic_write(args.output) as f:
        json.dump(coco, f)
    print(f"{name}: {len(coco['images'])} images, {len(coco['annotations'])} annotations -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
