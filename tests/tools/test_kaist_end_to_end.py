"""KAIST end to end through the user's commands: the real fixture frames laid out as a KAIST
root under ``$DETECTRON2_DATASETS``, the builtin dataset names, ``tools/train_net.py`` to
train an early-fusion detector a few iterations, ``tools/train_net.py --eval-only`` to
predict and score MR^-2 with ``KAISTEvaluator``, and ``tools/kaist_eval.py`` agreeing with it
on the detections file the evaluator wrote.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

CONFIG = REPO / "configs" / "KAIST" / "faster_rcnn_R_50_FPN_early_fusion_gn_scratch.yaml"
# The KAIST early-fusion config at toy scale: R18, small frames, 4 iterations.
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.SCHEDULE.NAME",
    "",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.STEPS",
    "(3,)",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.NUM_CONV",
    "0",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "INPUT.MIN_SIZE_TRAIN",
    "(160,)",
    "INPUT.MAX_SIZE_TRAIN",
    "200",
    "INPUT.MIN_SIZE_TEST",
    "160",
    "INPUT.MAX_SIZE_TEST",
    "200",
    "TEST.EVAL_PERIOD",
    "0",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATASETS.TRAIN",
    "('kaist_train_all02',)",
    "DATASETS.TEST",
    "('kaist_test_all20_improved',)",
]


@pytest.fixture
def kaist_datasets(shared_data, tmp_path) -> Path:
    """``$DETECTRON2_DATASETS`` whose ``kaist/`` root holds the 9 fixture frames as both image
    sets, the bbGt tree (original version) and the published flat improved annotations."""
    fixture = shared_data / "kaist-fixture"
    root = tmp_path / "datasets" / "kaist"
    (root / "imageSets").mkdir(parents=True)
    os.symlink(fixture / "images", root / "images")
    os.symlink(fixture / "annotations", root / "annotations")
    frames = (fixture / "imageSets" / "test-fixture.txt").read_text().split()
    for image_set in ("train-all-02", "test-all-20"):
        (root / "imageSets" / f"{image_set}.txt").write_text("\n".join(frames) + "\n")
    flat = root / "annotations-test-improved"
    flat.mkdir()
    for frame in frames:
        name = frame.replace("/", "_") + ".txt"
        shutil.copy(shared_data / "kaist-annotations-test-improved" / name, flat / name)
    return root.parent


def run(argv, env, cwd):
    result = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_then_eval_only_reports_miss_rates_the_cli_reproduces(kaist_datasets, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(kaist_datasets), OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    train_net = str(REPO / "tools" / "train_net.py")
    run([train_net, "--config-file", str(CONFIG), *TINY, "OUTPUT_DIR", str(out)], env, tmp_path)
    weights = out / "model_final.pth"
    assert weights.is_file()

    run(
        [
            train_net,
            "--config-file",
            str(CONFIG),
            "--eval-only",
            *TINY,
            "MODEL.WEIGHTS",
            str(weights),
            "OUTPUT_DIR",
            str(out),
        ],
        env,
        tmp_path,
    )
    inference = out / "inference" / "kaist_test_all20_improved"
    detections = inference / "kaist_detections.txt"
    lines = detections.read_text().split()
    assert lines, "the eval-only run wrote no detections"
    assert {int(line.split(",")[0]) for line in lines} <= set(range(1, 10))  # 1-based frames
    evaluator = json.loads((inference / "kaist_results.json").read_text())
    reasonable = evaluator["Reasonable-all"]
    assert reasonable["n_images"] == 9 and reasonable["n_persons"] > 0
    assert 0.0 <= reasonable["MR"] <= 100.0

    cli = run(
        [
            str(REPO / "tools" / "kaist_eval.py"),
            "--json",
            "--annotations",
            str(kaist_datasets / "kaist" / "annotations-test-improved"),
            "--image-set",
            str(kaist_datasets / "kaist" / "imageSets" / "test-all-20.txt"),
            "--detections",
            str(detections),
        ],
        env,
        tmp_path,
    )
    report = json.loads(cli.stdout)["settings"]
    assert report.keys() == evaluator.keys()
    for setting, result in evaluator.items():
        assert report[setting] == result, setting  # the same text, the same protocol
