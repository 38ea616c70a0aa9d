"""tools/train_net.py: Detectron2's launcher conventions plus --schedule and --dry-run."""

import re

import pytest
import yaml
from detectron2 import model_zoo

from detpre.engine.train_net import main

GN_9X = model_zoo.get_config_file("Misc/scratch_mask_rcnn_R_50_FPN_9x_gn.yaml")


def dry_run(capsys, *argv):
    assert main(["--config-file", GN_9X, "--dry-run", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def error_of(capsys, *argv) -> str:
    """The one error line of a command that must fail as bad input (exit status 2)."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_dry_run_prints_the_resolved_config(capsys):
    cfg = dry_run(capsys, "--schedule", "9x", "SOLVER.IMS_PER_BATCH", "64")
    assert cfg["SOLVER"]["MAX_ITER"] == 202500
    assert cfg["SOLVER"]["STEPS"] == [187500, 197500]
    assert cfg["SOLVER"]["BASE_LR"] == pytest.approx(0.08)
    assert cfg["SOLVER"]["SCHEDULE"]["NAME"] == "9x"


def test_schedule_key_in_overrides_works_like_the_flag(capsys):
    by_flag = dry_run(capsys, "--schedule", "6x")
    by_key = dry_run(capsys, "SOLVER.SCHEDULE.NAME", "6x")
    assert by_flag == by_key
    # The 9x config trains at 64 images: 6x is 540k iterations at 16, so 135k at 64.
    assert by_flag["SOLVER"]["MAX_ITER"] == 135000


def test_dry_run_builds_nothing_and_registers_subsets(capsys):
    from detectron2.data import DatasetCatalog

    cfg = dry_run(capsys, "DATASETS.TRAIN", "('coco_2017_train_2k_s7',)")
    assert cfg["DATASETS"]["TRAIN"] == ["coco_2017_train_2k_s7"]
    assert "coco_2017_train_2k_s7" in DatasetCatalog.list()


def test_unknown_schedule_is_a_clear_error(capsys):
    assert "Unknown schedule 'six'" in error_of(capsys, "--config-file", GN_9X, "--dry-run", "--schedule", "six")


def test_unknown_key_names_the_key(capsys):
    assert re.search(
        "override.*SOLVER.NO_SUCH_KEY", error_of(capsys, "--config-file", GN_9X, "--dry-run", "SOLVER.NO_SUCH_KEY", "1")
    )


def test_cuda_without_gpu_says_how_to_fix(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "MODEL.DEVICE cpu" in error_of(capsys, "--config-file", GN_9X, "MODEL.DEVICE", "cuda")


def test_bad_config_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  MAX_ITER: 'many'\n")
    assert re.search(f"{bad}.*MAX_ITER", error_of(capsys, "--config-file", str(bad), "--dry-run"))


@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL.PIXEL_STD", "[1.0, 1.0]"], "PIXEL_MEAN has 3 values.*PIXEL_STD has 2"),
        (
            ["MODEL.PIXEL_MEAN", "[1.0, 2.0, 3.0, 4.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]"],
            "'BGR' has 3 channels but MODEL.PIXEL_MEAN has 4",
        ),
        (
            [
                "INPUT.FORMAT",
                "BGRT",
                "MODEL.PIXEL_MEAN",
                "[1.0, 2.0, 3.0, 4.0]",
                "MODEL.PIXEL_STD",
                "[1.0, 1.0, 1.0, 1.0]",
            ],
            "'BGRT' is not one of Detectron2's image formats.*MultispectralDatasetMapper",
        ),
    ],
)
def test_inconsistent_input_channels_fail_before_any_data(opts, message, capsys):
    assert re.search(message, error_of(capsys, "--config-file", GN_9X, "--dry-run", *opts))
