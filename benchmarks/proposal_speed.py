#!/usr/bin/env python
"""Proposal generation: images/s per worker, and how it scales with workers.

    python benchmarks/proposal_speed.py --workers 1 2 [--kaist ../shared/data/kaist-fixture]

Runs ``tools/precompute_proposals.py``'s ``compute_proposals`` (``--generator``, default
SoCo's selective search at the image's size, AlignDet's filter) over the same images with
each worker count, a fresh output each time: the real KAIST fixture frames (640x512,
visible) when given, else the 128 px demo images. Prints images/s, images/s per worker and
the speed-up over one worker, all from this run, and checks that every worker count wrote
the same file. ``benchmarks/proposal_quality.py`` reports boxes and recall per generator.
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
from detpre.data.proposals import PROPOSAL_GENERATORS, SearchSettings, compute_proposals  # noqa: E402


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
    parser.add_argument("--generator", default="soco", choices=sorted(PROPOSAL_GENERATORS))
    parser.add_argument("--search-size", type=int, default=0, help="longer side searched (0: the image's)")
    args = parser.parse_args()

    dicts = [dict(d, image_id=i) for i, d in enumerate(dataset(args))]  # unique ids when cycled
    settings = SearchSettings(generator=args.generator, search_size=args.search_size)
    base, files = None, set()
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = compute_proposals(dicts, os.path.join(tmp, "p.pkl"), settings, workers=workers)
            rate = len(dicts) / (time.perf_counter() - start)
            files.add(open(path, "rb").read())
        base = base or rate
        print(
            f"workers={workers}: {rate:.2f} images/s, {rate / workers:.2f} per worker, speed-up {rate / base:.2f} "
            f"({len(dicts)} images, {args.generator}, searched at {args.search_size or 'their size'})"
        )
    print(f"identical files for every worker count: {len(files) == 1}")
    print(f"cpus={os.cpu_count()}")


if __name__ == "__main__":
    main()
