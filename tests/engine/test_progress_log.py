"""Training progress reaches the log by time as well as by iteration count (LOG_PERIOD, LOG_SECONDS)."""

import pytest

from detpre.engine.train_net import main
from detpre.utils.metrics import read_metrics

from conftest import DEMO_CONFIG, TINY_DEMO_OPTS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def logged_iterations(tmp_path, *opts):
    argv = [
        "--config-file",
        str(DEMO_CONFIG),
        *TINY_DEMO_OPTS,
        "SOLVER.MAX_ITER",
        "5",
        "SOLVER.STEPS",
        "(3, 4)",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
        *opts,
    ]
    assert main(argv) == 0
    return [r["iteration"] for r in read_metrics(str(tmp_path))]


def test_the_first_step_and_every_interval_are_written(tmp_path, demo_env):
    # By iteration count only: the first step, then every LOG_PERIOD, and the last.
    assert logged_iterations(tmp_path / "count", "LOG_PERIOD", "2", "LOG_SECONDS", "0.0") == [0, 1, 3, 4]
    # By time: any interval longer than LOG_SECONDS since the last write writes again.
    assert logged_iterations(tmp_path / "time", "LOG_PERIOD", "1000", "LOG_SECONDS", "1e-9") == [0, 1, 2, 3, 4]
