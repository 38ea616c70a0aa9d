#!/usr/bin/env python
"""Selective-search proposal generation: images/s per worker, and how it scales with workers.

    python benchmarks/proposal_speed.py --workers 1 2 [--kaist ../shared/data/kaist-fixture]

Runs ``tools/precompute_proposals.py``'s ``compute_proposals`` (fast mode, AlignDet's
filtering) over the same images with each worker count, a fresh output each time: the
real KAIST fixture frames (640x512, visible) when given, else the 128 px demo images.
Prints images/s, images/s per worker and the speed-up over one worker, all from this run.
"""

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detectron2.data import DatasetCatalog  # noqa: E402

from detpre.data.datasets.demo import ensure_demo_dataset, register_demo  # noqa: E402
from detpre.data.datasets.kaist import register_kaist  # noqa: E402
from tools.precompute_proposals import SearchSettings, compute_proposals  # noqa: E402


def dataset(args: argparse.Namespace) -> list:
    if args.kaist:
        register_kaist("bench_kaist", args.kaist, args.kaist_image_set, "original")
        dicts = DatasetCatalog.get("bench_kaist")
    else:
        root = os.path.join(tempfile.gettempdir(), "detpre_demo_bench")
        ensure_demo_dataset(root)
        register_demo("bench_demo", root)
        dicts = DatasetCatalog.get("bench_demo_val")
    return (dicts * (args.images // len(dicts) + 1))[: args.images] if args.images else dicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kaist", help="a KAIST root (e.g. ../shared/data/kaist-fixture)")
    parser.add_argument("--kaist-image-set", default="test-fixture")
    parser.add_argument("--images", type=int, default=0, help="cycle the dataset to this many images")
    parser.add_argument("--max-size", type=int, default=500)
    args = parser.parse_args()

    dicts = [dict(d, image_id=i) for i, d in enumerate(dataset(args))]  # unique ids when cycled
    settings = SearchSettings(max_size=args.max_size)
    base = None
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            compute_proposals(dicts, os.path.join(tmp, "p.pkl"), settings, workers=workers)
            rate = len(dicts) / (time.perf_counter() - start)
        base = base or rate
        print(
            f"workers={workers}: {rate:.2f} images/s, {rate / workers:.2f} per worker, "
            f"speed-up {rate / base:.2f} ({len(dicts)} images, max side {args.max_size})"
        )
    print(f"cpus={os.cpu_count()}")


if __name__ == "__main__":
    main()
