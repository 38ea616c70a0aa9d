"""Command line: the KAIST log-average miss rate of one or more result files.

Imports only numpy (and matplotlib when plotting) so that a call over the whole test set
returns in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from .bbgt import BBGTFormatError
from .detections import DetectionFormatError, read_detections
from .evaluate import SettingResult, evaluate, load_ground_truth, summary
from .frames import read_image_set
from .protocol import SETTINGS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kaist_eval.py",
        description="KAIST log-average miss rate (MR^-2 over FPPI 10^-2..10^0) with the protocol of "
        "the KAIST MATLAB toolbox (kaist_eval_full.m + bbGt.m): Reasonable all/day/night, "
        "scale and occlusion settings, one 'MR_<setting>: percent' line each.",
        epilog="Detections of one frame are matched in descending score order; between equal scores "
        "the file's line order decides, as in the MATLAB toolbox, so a file with such ties can give "
        "another MR when its lines are shuffled (without ties it cannot). 'tied_pairs' counts the "
        "pairs of detections of one frame with exactly the same score.",
    )
    p.add_argument(
        "--annotations",
        required=True,
        help="bbGt annotation directory: flat setXX_VYYY_IZZZZZ.txt files or the setXX/VYYY/IZZZZZ.txt tree",
    )
    p.add_argument("--image-set", required=True, help="frames in order, one setXX/VYYY/IZZZZZ a line")
    p.add_argument(
        "--detections",
        required=True,
        nargs="+",
        metavar="FILE",
        help="result files: text 'frame(1-based),x,y,w,h,score' lines or a JSON list of "
        "{image_id (0-based), bbox [x,y,w,h], score}",
    )
    p.add_argument("--names", nargs="+", help="a name per result file (default: the file names)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every setting")
    p.add_argument("--plot", metavar="OUT.png", help="draw the miss rate vs FPPI curves of the result files")
    p.add_argument(
        "--plot-setting",
        default="Reasonable-all",
        choices=[s.name for s in SETTINGS],
        help="setting whose curve --plot draws (default: %(default)s)",
    )
    return p


def _report(results: Dict[str, SettingResult], tied_pairs: int) -> Dict[str, object]:
    out: Dict[str, object] = dict(summary(results))
    out["tied_pairs"] = tied_pairs
    out["settings"] = {name: r.to_dict() for name, r in results.items()}
    return out


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    names: List[str] = args.names or [os.path.basename(p) for p in args.detections]
    if len(names) != len(args.detections):
        print(f"error: {len(names)} --names for {len(args.detections)} --detections", file=sys.stderr)
        return 2
    try:
        frames = read_image_set(args.image_set)
        gt = load_ground_truth(args.annotations, frames)
        detections = [read_detections(p, len(frames)) for p in args.detections]
        results = [evaluate(gt, frames, d) for d in detections]
    except (OSError, ValueError, BBGTFormatError, DetectionFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ties = [d.tied_pairs() for d in detections]
    for path, n in zip(args.detections, ties):
        if n:
            print(
                f"note: {path} has {n} pair(s) of equally scored detections in one frame; its MR can "
                "depend on their line order, as in the MATLAB toolbox.",
                file=sys.stderr,
            )
    if args.json:
        reports = [_report(r, n) for r, n in zip(results, ties)]
        print(json.dumps(reports[0] if len(reports) == 1 else dict(zip(names, reports)), indent=2))
    else:
        for name, res, n in zip(names, results, ties):
            if len(results) > 1:
                print(f"# {name}")
            for key, value in summary(res).items():
                print(f"{key}: {_fmt(value)}")
            print(f"tied_pairs: {n}")
    if args.plot:
        from .plot import plot_miss_rate_curves

        curves = [(n, r[args.plot_setting]) for n, r in zip(names, results)]
        plot_miss_rate_curves(curves, args.plot, title=args.plot_setting)
    return 0
