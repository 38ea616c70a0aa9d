#!/usr/bin/env python
"""detpre's main job in miniature: train a detector from random init and watch AP grow.

1. draws the synthetic ``detpre_demo`` dataset if it is not there yet;
2. trains a small GN ResNet-18-FPN Faster R-CNN *from scratch* on the CPU with
   ``tools/train_net.py`` (COCO AP is evaluated several times during the run);
3. draws AP and AP50 against iterations, as in *Rethinking ImageNet Pre-training*'s Figure 1,
   and prints the final AP, AP50, wall time and the figure's path.

    python tools/demo.py --output-dir output/demo                   # what `make demo` runs
    python tools/demo.py --schedule 2x                              # a longer run
    python tools/demo.py SOLVER.MAX_ITER 50 TEST.EVAL_PERIOD 25     # trailing KEY VALUE overrides
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from detpre.data.datasets.demo import ensure_demo_dataset
from detpre.utils.cli import cli_main
from detpre.utils.curves import Curve, plot_curves
from detpre.utils.metrics import METRICS_FILE, metric_series

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml"
CURVE_FILE = "ap_vs_iteration.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/demo", help="run directory (default: output/demo)")
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG), help="demo config to train")
    parser.add_argument("--schedule", default="", metavar="KX", help="named schedule, e.g. 2x (default: the config's)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir instead of restarting")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides passed to train_net.py")
    return parser


def train_command(args: argparse.Namespace) -> List[str]:
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", args.config_file]
    if args.schedule:
        command += ["--schedule", args.schedule]
    if args.resume:
        command.append("--resume")
    return command + ["MODEL.DEVICE", "cpu", *args.opts, "OUTPUT_DIR", args.output_dir]


def training_env() -> Dict[str, str]:
    """The environment of the training process.

    PyTorch's CPU kernels run on GNU OpenMP threads, which by default spin while waiting
    for work. On a CPU shared with other processes (a laptop, a CI runner, colleagues' jobs)
    a spinning thread keeps the core from the thread it waits for: we measured training 3.5x
    slower on 2 loaded cores. Passive waiting costs little on an idle machine, so it is the
    demo's default unless the caller set OMP_WAIT_POLICY.
    """
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    print(f"[demo] dataset: {ensure_demo_dataset()}", flush=True)

    metrics = Path(args.output_dir) / METRICS_FILE
    if metrics.exists() and not args.resume:
        # Detectron2 appends to metrics.json; a fresh run must not draw an older run's curve.
        metrics.unlink()
    command = train_command(args)
    print("[demo] " + " ".join(command), flush=True)
    returncode = subprocess.call(command, env=training_env())
    if returncode != 0:
        print(f"[demo] training failed (exit status {returncode}); see {args.output_dir}/log.txt", file=sys.stderr)
        return returncode

    ap, ap50 = metric_series(args.output_dir, "bbox/AP"), metric_series(args.output_dir, "bbox/AP50")
    figure = plot_curves(
        [Curve("AP", ap), Curve("AP50", ap50)],
        os.path.join(args.output_dir, CURVE_FILE),
        ylabel="COCO box AP on detpre_demo_val",
        metric="bbox/AP",
        title=f"{Path(args.config_file).stem}: from random init, CPU",
    )
    wall = time.perf_counter() - start
    print(f"[demo] final bbox AP {ap[-1][1]:.1f}, AP50 {ap50[-1][1]:.1f} after {ap[-1][0]} iterations")
    print(f"[demo] wall time {wall / 60:.1f} min ({wall:.0f} s)")
    print(f"[demo] AP vs iteration: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
