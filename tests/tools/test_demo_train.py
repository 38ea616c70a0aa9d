"""`make demo` end to end, shortened: data, training from scratch through train_net, COCO AP
evaluated during the run, and the AP-vs-iteration figure."""

import re
import subprocess
import sys

import cv2
import pytest

from detpre.utils.metrics import metric_series

from conftest import REPO, TINY_DEMO_OPTS

pytestmark = pytest.mark.slow


def test_demo_trains_evaluates_and_plots(demo_env, tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "demo.py"),
            "--output-dir",
            str(out),
            *TINY_DEMO_OPTS,
            "SOLVER.MAX_ITER",
            "40",
            "SOLVER.STEPS",
            "(30,)",
            "SOLVER.WARMUP_ITERS",
            "5",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            "TEST.EVAL_PERIOD",
            "20",
            "DATASETS.TEST",
            "('detpre_demo_val_10_s0',)",
            "SEED",
            "0",
        ],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # COCO AP was evaluated during the run (iteration 20) and at its end (40).
    ap = metric_series(str(out), "bbox/AP")
    assert [it for it, _ in ap] == [20, 40]
    assert all(0 <= v <= 100 for _, v in ap)
    final = re.search(r"final bbox AP ([\d.]+), AP50 ([\d.]+) after 40 iterations", done.stdout)
    assert final is not None, done.stdout[-2000:]
    assert float(final.group(1)) == pytest.approx(ap[-1][1], abs=0.05)

    assert (out / "model_final.pth").is_file()
    figure = out / "ap_vs_iteration.png"
    assert f"AP vs iteration: {figure}" in done.stdout
    image = cv2.imread(str(figure))
    assert image is not None and image.std() > 10

    # Something was learned. The total loss is not monotone this early (box regression loss
    # grows as the RPN starts proposing objects), but the RPN's objectness loss, ln 2 at
    # random init, falls from the first window of 20 logged (steps 1-20) to the last (21-40).
    # (The first step is logged too, so that a slow run is not silent.)
    rpn = metric_series(str(out), "loss_rpn_cls")
    assert [it for it, _ in rpn] == [1, 20, 40] and rpn[-1][1] < 0.9 * rpn[1][1]


def test_a_second_demo_run_draws_only_its_own_curve(demo_env, tmp_path):
    """Detectron2 appends to metrics.json; the demo's figure must not mix in an older run."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "metrics.json").write_text('{"iteration": 999, "bbox/AP": 99.0}\n')
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "demo.py"),
            "--output-dir",
            str(out),
            *TINY_DEMO_OPTS,
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.STEPS",
            "(1,)",
            "SOLVER.WARMUP_ITERS",
            "1",
            "TEST.EVAL_PERIOD",
            "0",
            "DATASETS.TEST",
            "('detpre_demo_val_4_s0',)",
        ],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [it for it, _ in metric_series(str(out), "bbox/AP")] == [2]
