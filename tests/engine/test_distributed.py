"""Two processes on the CPU through Detectron2's launch (gloo): the ranks agree."""

import json
import subprocess
import sys

import pytest

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("norm", ["GN", "SyncBN"])
def test_two_cpu_processes_train_the_same_weights(demo_env, tmp_path, norm):
    opts = [
        # --schedule 1x resolves to 4 iterations at these reference values.
        *TINY_DEMO_OPTS,
        "SOLVER.SCHEDULE.ITERS_PER_X",
        "4",
        "SOLVER.SCHEDULE.STEPS_FROM_END",
        "(2, 1)",
        "SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH",
        "2",
        "SOLVER.SCHEDULE.WARMUP_ITERS",
        "1",
        "DATASETS.TEST",
        "()",
        "DATASETS.TRAIN",
        "('detpre_demo_train_64_s3',)",
        "MODEL.RESNETS.NORM",
        norm,
        "MODEL.FPN.NORM",
        norm,
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path / "run"),
    ]
    if norm == "SyncBN":  # precise BN and test-time augmentation with DDP and the all-reduce BN
        opts += [
            "TEST.PRECISE_BN.ENABLED",
            "True",
            "TEST.PRECISE_BN.NUM_ITER",
            "2",
            "DATASETS.TEST",
            "('detpre_demo_val_4_s0',)",
            "TEST.AUG.ENABLED",
            "True",
            "TEST.AUG.MIN_SIZES",
            "(96,)",
        ]
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "engine" / "distributed_worker.py"),
            str(tmp_path),
            "2",
            "--config-file",
            str(DEMO_CONFIG),
            "--schedule",
            "1x",
            *opts,
        ],
        env=demo_env,
        check=True,
        timeout=900,
        capture_output=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    # DDP all-reduces gradients: after the steps, both replicas hold the same weights.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # The schedule and the subset resolve the same on every rank.
    assert ranks[0]["config"] == ranks[1]["config"]
    assert ranks[0]["train_images"] == ranks[1]["train_images"] and len(ranks[0]["train_images"]) == 64
    assert all(r["iter"] == 4 for r in ranks)
    assert "MAX_ITER: 4" in ranks[0]["config"] and "- 2\n  - 3" in ranks[0]["config"]
    if norm == "SyncBN":
        # torch's SyncBatchNorm only syncs CUDA tensors: CPU ranks use Detectron2's all-reduce BN.
        assert "NaiveSyncBatchNorm" in ranks[0]["norms"] and "SyncBatchNorm" not in ranks[0]["norms"]
        # Both ranks ran precise BN (the buffers agree, above); the main one reports both evaluations.
        assert all("ResumablePreciseBN" in r["hooks"] for r in ranks)
        assert ranks[0]["eval_results"] == ["bbox", "bbox_TTA"] and ranks[1]["eval_results"] == []
