"""--eval-only evaluates the weights the user meant: no weights, or another architecture's,
are one error line that says how many tensors and which, unless TEST.MAX_UNLOADED_WEIGHTS allows it."""

import pytest
import torch
from detectron2.modeling import build_model

from detpre.checkpoint.load_report import LoadReport, WeightsError, check_loaded
from detpre.config import load_cfg
from detpre.engine.train_net import main

from conftest import DEMO_CONFIG, TINY_DEMO_OPTS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

EVAL = [
    "--config-file",
    str(DEMO_CONFIG),
    "--eval-only",
    *TINY_DEMO_OPTS,
    "DATASETS.TEST",
    "('detpre_demo_val_4_s0',)",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_no_weights_is_refused_unless_allowed(demo_env, tmp_path, capsys):
    assert main([*EVAL, "OUTPUT_DIR", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "No MODEL.WEIGHTS given: the model leaves" in line and "(100.0%) at their initialization" in line
    assert "TEST.MAX_UNLOADED_WEIGHTS (now 0) to 1.0" in line
    assert main([*EVAL, "OUTPUT_DIR", str(tmp_path), "TEST.MAX_UNLOADED_WEIGHTS", "1.0"]) == 0


def test_another_architectures_checkpoint_is_refused_with_counts(demo_env, tmp_path, capsys):
    other = load_cfg(
        str(DEMO_CONFIG),
        [
            *TINY_DEMO_OPTS,
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "128",
            "MODEL.RPN.HEAD_NAME",
            "StandardRPNHead",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "7",
        ],
    )
    weights = tmp_path / "other.pth"
    torch.save({"model": build_model(other).state_dict()}, weights)
    assert main([*EVAL, "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(weights)]) == 2
    line = error_line(capsys)
    assert f"MODEL.WEIGHTS '{weights}' leaves 8 of the model's 98 tensors (8.2%)" in line
    assert "8 of another shape (roi_heads.box_head.fc1.bias, roi_heads.box_head.fc1.weight" in line
    # Its own architecture's weights load whole and evaluate.
    own = tmp_path / "own.pth"
    torch.save({"model": build_model(load_cfg(str(DEMO_CONFIG), TINY_DEMO_OPTS)).state_dict()}, own)
    assert main([*EVAL, "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(own)]) == 0


def test_check_loaded_counts_missing_and_wrong_shapes():
    report = LoadReport(missing=["a", "b", "c"], wrong_shape=["c"])
    check_loaded(report, ["a", "b", "c", "d"], "w.pth", tolerance=0.75)
    with pytest.raises(
        WeightsError,
        match=r"leaves 3 of the model's 4 tensors \(75\.0%\).*2 not in the checkpoint "
        r"\(a, b\); 1 of another shape \(c\)",
    ):
        check_loaded(report, ["a", "b", "c", "d"], "w.pth", tolerance=0.5)
    check_loaded(LoadReport(), ["a"], "w.pth", tolerance=0.0)
