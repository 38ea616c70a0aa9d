#!/usr/bin/env python
"""Plot a metric against training length for several Detectron2 runs on one figure.

The comparison of *Rethinking ImageNet Pre-training*'s Figure 1 (random init vs
pre-training, across schedules), for any runs that wrote Detectron2's ``metrics.json``:

    python tools/plot_curves.py --runs output/scratch_6x:scratch output/imagenet_3x:ImageNet \\
        --metric bbox/AP --output curves.png
    # runs with different batch sizes: x = iterations * SOLVER.IMS_PER_BATCH (from config.yaml)
    python tools/plot_curves.py --runs out/a out/b --x images --output curves.png
"""

import argparse
import sys
from typing import List, Optional

from detpre.utils.cli import cli_main
from detpre.utils.curves import RunSpec, plot_curves, run_curve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="DIR[:LABEL]",
        help="Detectron2 output directories (or their metrics.json), each optionally :LABEL",
    )
    parser.add_argument("--metric", default="bbox/AP", help="metrics.json key to plot (default: bbox/AP)")
    parser.add_argument("--output", default="curves.png", help="image file to write (default: curves.png)")
    parser.add_argument(
        "--x",
        choices=("iterations", "images"),
        default="iterations",
        help="x axis: iterations trained, or images seen (iterations * SOLVER.IMS_PER_BATCH)",
    )
    parser.add_argument("--title", default=None, help="figure title")
    return parser


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    curves = [run_curve(RunSpec.parse(r), args.metric, args.x) for r in args.runs]
    xlabel = "iterations" if args.x == "iterations" else "images seen"
    print(plot_curves(curves, args.output, xlabel=xlabel, ylabel=args.metric, title=args.title, metric=args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
