#!/usr/bin/env python
"""Wall time of one ``tools/kaist_eval.py`` call over the whole KAIST test set.

    python benchmarks/kaist_eval_speed.py --repeats 7 --detections 4000

Builds a synthetic but realistic result file once (the improved test annotations' boxes,
jittered, plus random false positives, ``--detections`` lines in all, fixed seed), then runs
the CLI in a fresh interpreter ``--repeats`` times, as a user would, and prints the median
wall time: Python start-up, imports, reading 2,252 annotation files, the nine settings.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kaisteval.detections import Detections, write_detections  # noqa: E402
from kaisteval.evaluate import load_ground_truth  # noqa: E402
from kaisteval.frames import read_image_set  # noqa: E402

DATA = Path(os.environ.get("DETPRE_SHARED_DATA", REPO.parent / "shared" / "data"))


def synthetic_detections(annotations: str, image_set: str, n: int, seed: int = 0) -> Detections:
    """Jittered ground-truth boxes (scored high) plus uniform false positives (scored low)."""
    rng = np.random.default_rng(seed)
    frames = read_image_set(image_set)
    gt = load_ground_truth(annotations, frames)
    n_true = min(len(gt), n // 2)
    pick = rng.choice(len(gt), n_true, replace=False)
    true_boxes = gt.raw_boxes[pick] + rng.normal(0, 2.0, (n_true, 4))
    true_boxes[:, 2:] = np.maximum(true_boxes[:, 2:], 1.0)
    n_false = n - n_true
    h = rng.uniform(20, 150, n_false)
    false_boxes = np.column_stack([rng.uniform(0, 600, n_false), rng.uniform(100, 400, n_false), 0.41 * h, h])
    return Detections(
        frame=np.concatenate([gt.frame[pick], rng.integers(0, len(frames), n_false)]),
        boxes=np.concatenate([true_boxes, false_boxes]),
        scores=np.concatenate([rng.uniform(0.3, 1.0, n_true), rng.uniform(0.0, 0.7, n_false)]),
    )


def timed(cmd) -> Tuple[float, float, str]:
    """(wall, CPU user+sys) seconds of one run of ``cmd``, and its stdout.

    CPU time is reported beside wall time because on a shared 2-core machine the wall time
    mostly measures the other processes; the CPU time is what the call costs.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def describe(runs: List[Tuple[float, float, str]]) -> str:
    wall = [r[0] for r in runs]
    cpu = [r[1] for r in runs]
    return (
        f"wall median {statistics.median(wall):.3f} s (min {min(wall):.3f}, max {max(wall):.3f}), "
        f"CPU median {statistics.median(cpu):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", default=str(DATA / "kaist-annotations-test-improved"))
    parser.add_argument("--image-set", default=str(DATA / "kaist-imagesets" / "test-all-20.txt"))
    parser.add_argument("--detections", type=int, default=4000, help="lines in the synthetic result file")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        det_file = os.path.join(tmp, "detections.txt")
        write_detections(det_file, synthetic_detections(args.annotations, args.image_set, args.detections))
        tool = [sys.executable, str(REPO / "tools" / "kaist_eval.py"), "--annotations", args.annotations]
        tool += ["--image-set", args.image_set, "--detections", det_file]
        # Interleaved with the floor no numpy program can beat: the interpreter importing numpy.
        floor, runs = [], []
        for _ in range(args.repeats):
            floor.append(timed([sys.executable, "-c", "import numpy"]))
            runs.append(timed(tool))
    print(runs[-1][2].strip())
    print(f"kaist_eval.py, {args.detections} detections, 2,252 frames, {args.repeats} runs: {describe(runs)}")
    print(f"floor, python -c 'import numpy', same runs: {describe(floor)}")
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
