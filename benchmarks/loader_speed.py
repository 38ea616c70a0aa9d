#!/usr/bin/env python
"""detpre's training data path against Detectron2's, on the demo data (CPU).

    python benchmarks/loader_speed.py --batches 60 --workers 0 1 2 --rounds 3

Two comparisons, each taken in this run with rounds alternating between the sides:

* loaders: Detectron2's ``build_detection_train_loader`` against detpre's resumable loader
  (``DATALOADER.RESUMABLE``: batches a function of seed, rank and iteration, every RNG
  re-seeded per batch), both with Detectron2's ``DatasetMapper``, at each ``--workers``;
* mappers, one process: Detectron2's ``DatasetMapper`` against ``TwoViewDatasetMapper``
  (box-domain pre-training: two views with their own geometry and photometric augmentation,
  AlignDet's one operation per view and the BYOL chain), on the same images with the boxes
  as proposals.

Prints samples/s (medians over rounds) and detpre / Detectron2.
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

import detpre  # noqa: E402
from detpre.data.build import build_resumable_train_loader  # noqa: E402
from detpre.data.dataset_mappers.two_view_mapper import TwoViewDatasetMapper  # noqa: E402
from detpre.data.datasets.demo import ensure_demo_dataset, register_demo  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "Demo", "faster_rcnn_R18_FPN_scratch.yaml")


def config(workers: int, dataset: str):
    cfg = get_cfg()
    detpre.add_detpre_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = workers
    return cfg


def loader_rate(make: Callable, batches: int, batch_size: int) -> float:
    """Samples/s of ``batches`` batches, the loader's start-up (worker spawn) excluded."""
    stream = iter(make())
    next(stream)
    start = time.perf_counter()
    for _ in itertools.islice(stream, batches):
        pass
    return batches * batch_size / (time.perf_counter() - start)


def mapper_rate(mapper: Callable, dicts: List[Dict]) -> float:
    start = time.perf_counter()
    for d in dicts:
        mapper(dict(d))
    return len(dicts) / (time.perf_counter() - start)


def with_proposals(dicts: List[Dict]) -> List[Dict]:
    """The dataset dicts with their boxes as proposals (what the proposal file gives)."""
    out = []
    for d in dicts:
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]])
        out.append(
            dict(
                d,
                proposal_boxes=boxes.reshape(-1, 4),
                proposal_objectness_logits=np.zeros(len(boxes)),
                proposal_bbox_mode=BoxMode.XYXY_ABS,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="none: mappers only")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = os.path.join(tempfile.gettempdir(), "detpre_demo_bench")
    ensure_demo_dataset(root)
    register_demo("bench_demo", root)
    for workers in args.workers:
        cfg = config(workers, "bench_demo_train")
        batch = cfg.SOLVER.IMS_PER_BATCH
        sides = {
            "Detectron2 loader": lambda cfg=cfg: build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, True)),
            "detpre resumable loader": lambda cfg=cfg: build_resumable_train_loader(cfg, DatasetMapper(cfg, True)),
        }
        rates: Dict[str, List[float]] = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, make in sides.items():
                rates[name].append(loader_rate(make, args.batches, batch))
        medians = {k: statistics.median(v) for k, v in rates.items()}
        for name, rate in medians.items():
            print(f"workers={workers} {name:>24}: {rate:7.1f} samples/s")
        ratio = medians["detpre resumable loader"] / medians["Detectron2 loader"]
        print(f"workers={workers} detpre/Detectron2: {ratio:.2f}")

    cfg = config(0, "bench_demo_train")
    dicts = with_proposals(DatasetCatalog.get("bench_demo_train")[:200])
    mappers = {"Detectron2 DatasetMapper": DatasetMapper(cfg, True)}
    for recipe in ("aligndet", "byol"):  # INPUT.TWO_VIEW.PHOTOMETRIC
        cfg.INPUT.TWO_VIEW.PHOTOMETRIC = recipe
        mappers[f"TwoView, {recipe}"] = TwoViewDatasetMapper(cfg, True)
    rates = {k: [] for k in mappers}
    for _ in range(args.rounds):
        for name, mapper in mappers.items():
            rates[name].append(mapper_rate(mapper, dicts))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for name, rate in medians.items():
        print(f"mapper {name:>24}: {rate:7.1f} samples/s (one process)")
    for name in [n for n in medians if n.startswith("TwoView")]:
        print(f"mapper {name} / DatasetMapper: {medians[name] / medians['Detectron2 DatasetMapper']:.2f}")


if __name__ == "__main__":
    main()
