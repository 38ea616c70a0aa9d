#!/usr/bin/env python
"""Time detpre's multispectral mapper against Detectron2's DatasetMapper on KAIST frames.

    python benchmarks/mapper_speed.py --rounds 7

Detectron2's ``DatasetMapper`` maps the visible frame alone (``INPUT.FORMAT BGR``); detpre's
``MultispectralDatasetMapper`` maps visible + thermal (``BGRT``, ``BGRTTT``). Both get the
same training augmentation (ResizeShortestEdge to ``--min-size``, random flip), the same
frames (the KAIST fixture of ``/work/shared/data``, or ``--root``/``--image-set``) and the
same RNG seed. Rounds of the mappers alternate, so a load spike on a shared machine hits
both; the figures are the medians over rounds, and the ratio is Detectron2's samples/s
over detpre's (1.0 = as fast, 1.3 = 30% slower).
"""

import argparse
import os
import random
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper

import detpre
from detpre.data.dataset_mappers.multispectral_mapper import MultispectralDatasetMapper
from detpre.data.datasets.kaist import register_kaist

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DETPRE_SHARED_DATA", REPO.parent / "shared" / "data"))
# Channel statistics only size the check in the mapper; their values do not matter here.
PIXEL_STATS = {"BGR": 3, "BGRT": 4, "BGRTTT": 6}


def build_cfg(fmt: str, min_size: int):
    cfg = get_cfg()
    detpre.add_detpre_config(cfg)
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.MODEL.PIXEL_MEAN = [100.0] * PIXEL_STATS[fmt]
    cfg.MODEL.PIXEL_STD = [50.0] * PIXEL_STATS[fmt]
    return cfg


def samples_per_second(mapper: Callable, dicts: List[Dict], passes: int, seed: int) -> float:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    for _ in range(passes):
        for d in dicts:
            mapper(d)
    return passes * len(dicts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED / "kaist-fixture"), help="KAIST root")
    parser.add_argument("--image-set", default="test-fixture", help="image set under ROOT/imageSets")
    parser.add_argument("--min-size", type=int, default=800, help="INPUT.MIN_SIZE_TRAIN (default 800)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (median taken)")
    parser.add_argument("--passes", type=int, default=3, help="passes over the frames per round")
    args = parser.parse_args()

    register_kaist("kaist_benchmark", args.root, args.image_set, "original")
    dicts = DatasetCatalog.get("kaist_benchmark")
    mappers = {
        "Detectron2 DatasetMapper (BGR)": DatasetMapper(build_cfg("BGR", args.min_size), is_train=True),
        "detpre multispectral (BGRT)": MultispectralDatasetMapper(build_cfg("BGRT", args.min_size), is_train=True),
        "detpre multispectral (BGRTTT)": MultispectralDatasetMapper(build_cfg("BGRTTT", args.min_size), is_train=True),
    }
    rates: Dict[str, List[float]] = {name: [] for name in mappers}
    for mapper in mappers.values():  # warm-up: file cache, lazy imports
        samples_per_second(mapper, dicts, 1, 0)
    for round_index in range(args.rounds):
        for name, mapper in mappers.items():
            rates[name].append(samples_per_second(mapper, dicts, args.passes, round_index))

    print(
        f"{len(dicts)} frames from {args.root} ({args.image_set}), 640x512 -> short side "
        f"{args.min_size}, random flip; {args.rounds} rounds x {args.passes} passes; "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    baseline = statistics.median(rates["Detectron2 DatasetMapper (BGR)"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:32s} {median:7.1f} samples/s   ratio (D2 / this) {baseline / median:5.2f}")


if __name__ == "__main__":
    main()
