"""Command line: the KAIST log-average miss rate of one or more result files.

Imports only numpy (and matplotlib when plotting) so that a call over the whole test set
returns in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence

from .bbgt import BBGTFormatError
from .detections import (
    DEFAULT_BASES,
    DetectionFormatError,
    Detections,
    parse_detections,
    read_result_text,
    sniff_format,
)
from .evaluate import SettingResult, evaluate, load_ground_truth, summary
from .frames import Frame, read_image_set
from .protocol import SETTINGS, GroundTruth

#: Reading a file with the other frame base must lower MR_all by this much (points) to warn.
_BASE_EVIDENCE = 10.0

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
    for fmt, name in (("txt", "text"), ("json", "JSON")):
        p.add_argument(
            f"--{fmt}-base",
            type=int,
            choices=(0, 1),
            default=DEFAULT_BASES[fmt],
            help=f"number of the first frame in {name} files (default %(default)s, the convention of the "
            "MATLAB toolbox and MLPD's evaluator); a warning says when the other base fits a file much better",
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


def _mr_all(gt: GroundTruth, frames: List[Frame], detections: Detections) -> Optional[float]:
    return summary(evaluate(gt, frames, detections)).get("MR_all")


class FileResult(NamedTuple):
    """One result file evaluated: its results, detections, and a warning about its numbering."""

    results: Dict[str, SettingResult]
    detections: Detections
    warning: Optional[str]


def evaluate_file(path: str, gt: GroundTruth, frames: List[Frame], bases: Dict[str, int]) -> FileResult:
    """The results of one file read with its format's base, and a warning when reading it
    with the other base (if its numbers allow it) gives a much lower MR_all."""
    text = read_result_text(path)
    fmt = sniff_format(text)
    base = bases[fmt]
    detections = parse_detections(text, path, len(frames), fmt, base)
    results = evaluate(gt, frames, detections)
    used = summary(results).get("MR_all")
    try:
        other = _mr_all(gt, frames, parse_detections(text, path, len(frames), fmt, 1 - base))
    except DetectionFormatError:  # a frame number the other base cannot hold
        other = None
    warning = None
    if used is not None and other is not None and other < used - _BASE_EVIDENCE:
        warning = (
            f"{path}: read with frames numbered from {base}, MR_all {used:.2f}; numbered from {1 - base} it "
            f"would be {other:.2f}: if its frames count from {1 - base}, pass --{fmt}-base {1 - base}"
        )
    return FileResult(results, detections, warning)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    names: List[str] = args.names or [os.path.basename(p) for p in args.detections]
    if len(names) != len(args.detections):
        print(f"error: {len(names)} --names for {len(args.detections)} --detections", file=sys.stderr)
        return 2
    bases = {"txt": args.txt_base, "json": args.json_base}
    try:
        frames = read_image_set(args.image_set)
        gt = load_ground_truth(args.annotations, frames)
        evaluated = [evaluate_file(p, gt, frames, bases) for p in args.detections]
    except (OSError, ValueError, BBGTFormatError, DetectionFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = [e.results for e in evaluated]
    ties = [e.detections.tied_pairs() for e in evaluated]
    for path, e, n in zip(args.detections, evaluated, ties):
        if e.warning:
            print(f"warning: {e.warning}", file=sys.stderr)
        if n:
            print(
                f"note: {path} has {n} pair(s) of equally scored detections in one frame; its MR can "
                "depend on their line order, as in the MATLAB toolbox.",
                file=sys.stderr,
            )
    numbering = f"frames numbered from {bases['txt']} in text files, from {bases['json']} in JSON files"
    if args.json:
        reports = [dict(_report(r, n), frame_base=bases) for r, n in zip(results, ties)]
        print(json.dumps(reports[0] if len(reports) == 1 else dict(zip(names, reports)), indent=2))
    else:
        print(f"# {numbering}")
        for name, res, n in zip(names, results, ties):
            if len(results) > 1:
                print(f"# {name}")
            for key, value in summary(res).items():
                print(f"{key}: {_fmt(value)}")
            print(f"tied_pairs: {n}")
    if args.plot:
        from .plot import plot_miss_rate_curves

        curves = [(n, r[args.plot_setting]) for n, r in zip(names, results)]
        try:
            plot_miss_rate_curves(curves, args.plot, title=args.plot_setting)
        except OSError as e:
            print(f"error: cannot write {args.plot}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 0
