"""KAIST end to end through the user's commands: the real fixture frames laid out as a KAIST
root under ``$DETECTRON2_DATASETS``, the builtin dataset names, ``tools/train_net.py`` to
train an early-fusion detector a few iterations, ``tools/train_net.py --eval-only`` to
predict and score MR^-2 with ``KAISTEvaluator``, and ``tools/kaist_eval.py`` agreeing with it
on the detections file the evaluator wrote; and the whole target-only chain (image-domain SSL ->
box-domain pre-training on thermal proposals -> fine-tuning) through ``tools/init_study.py``
with the KAIST study file, its jobs run by submitit's local executor.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


# The study's cells at toy scale: TINY's model and frames, with the KAIST schedule shrunk so
# that the study's "1x" is 4 iterations of 2 frames (the study names the schedule).
# The KAIST configs train on the train-all-02 frames with the paired annotations (the box-domain
# ones never read a label); the fixture has the original annotations of the same frames.
FIXTURE_TRAIN = ["DATASETS.TRAIN", "('kaist_train_all02',)"]
_MODEL = TINY[TINY.index("MODEL.RESNETS.DEPTH") : TINY.index("TEST.EVAL_PERIOD")]
STUDY_CELLS = ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", *_MODEL, "DATALOADER.NUM_WORKERS", "0"]
STUDY_CELLS += FIXTURE_TRAIN
STUDY_CELLS += ["SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH", "2", "SOLVER.SCHEDULE.ITERS_PER_X", "4"]
STUDY_CELLS += ["SOLVER.SCHEDULE.STEPS_FROM_END", "(2, 1)", "SOLVER.SCHEDULE.WARMUP_ITERS", "1"]
STUDY_CELLS += ["SOLVER.SCHEDULE.CHECKPOINT_PERIOD", "4", "SOLVER.SCHEDULE.EVAL_PERIOD", "4"]
_STAGE = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1"]
_STAGE += ["DATALOADER.NUM_WORKERS", "0"]
# MoCo v2 on 64 px crops of the 9 frames, a queue of two batches.
SSL_STAGE = [*_STAGE, "SOLVER.IMS_PER_BATCH", "4", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
SSL_STAGE += ["MODEL.IMAGE_DOMAIN.HIDDEN_DIM", "64", "MODEL.IMAGE_DOMAIN.QUEUE_SIZE", "8"]
SSL_STAGE += ["INPUT.IMAGE_DOMAIN.CROP_SIZE", "64"]
BOX_STAGE = [*_STAGE, "SOLVER.IMS_PER_BATCH", "2", *_MODEL, *FIXTURE_TRAIN]


def test_the_target_only_chain_runs_through_the_study_as_cluster_jobs(kaist_datasets, tmp_path):
    """configs/KAIST/init_study.yaml on the fixture laid out as KAIST, as a user would run it on a
    cluster (submitit, here its local executor), shrunk by flags only: thermal proposals made by
    the tool from the box-domain config; MoCo v2 on the unlabeled frames -> its backbone ->
    box-domain pre-training -> the detector -> fine-tuning and MR^-2, beside scratch."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(kaist_datasets), OMP_NUM_THREADS="1")
    box_config = REPO / "configs" / "KAIST" / "aligndet_pretrain_faster_rcnn_R_50_FPN_early_fusion_gn_mocov2.yaml"
    proposals = tmp_path / "proposals.pkl"
    made = run(
        [str(REPO / "tools" / "precompute_proposals.py"), "--config-file", str(box_config), "--output", str(proposals)]
        + FIXTURE_TRAIN,
        env,
        tmp_path,
    )
    assert proposals.is_file(), made.stderr[-2000:]
    out = tmp_path / "study"
    argv = [str(REPO / "tools" / "init_study.py"), "--study", str(REPO / "configs" / "KAIST" / "init_study.yaml")]
    argv += ["--output-dir", str(out), "--only", "scratch", "ssl", "ssl_boxdomain", "--schedules", "1x"]
    argv += ["--launcher", "submitit-local", "--wait", "--poll-seconds", "1", "--opts", *STUDY_CELLS]
    argv += ["--stage-opts", "ssl", *SSL_STAGE, "--stage-opts", "ssl_boxdomain", *BOX_STAGE]
    argv += ["DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposals}',)"]
    run(argv, env, tmp_path)

    # Every job ran through submitit, each stage from what the study file says.
    jobs = json.loads((out / "jobs.json").read_text())
    assert {"pretrain_ssl", "pretrain_ssl_boxdomain", "scratch_1x", "ssl_1x", "ssl_boxdomain_1x"} <= set(jobs)
    ssl_log = (out / "pretrain" / "ssl" / "log.txt").read_text()
    assert "image_domain/queue_fill" in (out / "pretrain" / "ssl" / "metrics.json").read_text(), ssl_log[-2000:]
    backbone = torch.load(out / "weights" / "init_ssl.pth", map_location="cpu")["model"]
    assert backbone and all(k.startswith("backbone.bottom_up.") for k in backbone)  # the MoCo query encoder
    detector = torch.load(out / "weights" / "init_ssl_boxdomain.pth", map_location="cpu")["model"]
    assert any(k.startswith("proposal_generator.") for k in detector)  # the whole box-domain detector
    # The table: MR^-2 all / day / night of every row, from each run's KAISTEvaluator.
    with open(out / "init_study.json") as f:
        study = json.load(f)
    assert study["metrics"] == ["kaist/MR_all", "kaist/MR_day", "kaist/MR_night"]
    runs = {r["init"]: r for r in study["runs"]}
    assert set(runs) == {"scratch", "ssl", "ssl_boxdomain"}
    for name, row in runs.items():
        assert row["status"] == "done", (name, row)
        assert all(0.0 <= row["values"][m] <= 100.0 for m in study["metrics"]), row
    assert (out / "init_study.png").is_file()
