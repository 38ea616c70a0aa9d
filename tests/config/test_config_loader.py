"""detpre.config.load_cfg: defaults < config files < schedule < command line, and the checks
made before anything is built."""

import logging

import pytest
import yaml

from detpre.config import ConfigError, load_cfg, resolve_cfg
from detpre.engine.train_net import main

from conftest import REPO

SCRATCH_6X = str(REPO / "configs" / "COCO-Scratch" / "mask_rcnn_R_50_FPN_6x_gn_scratch.yaml")
KAIST_3X = str(REPO / "configs" / "KAIST" / "faster_rcnn_R_50_FPN_early_fusion_gn_scratch.yaml")
DEMO = str(REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml")


def dry_run(capsys, *argv):
    assert main(list(argv) + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    return yaml.safe_load(out), [line for line in out.splitlines() if line.startswith("#")]


def test_command_line_values_win_over_the_schedule(capsys):
    cfg, notes = dry_run(capsys, "--config-file", SCRATCH_6X, "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "1000")
    assert cfg["SOLVER"]["BASE_LR"] == 0.01 and cfg["SOLVER"]["MAX_ITER"] == 1000
    # The keys the command line left alone still come from the schedule.
    assert cfg["SOLVER"]["STEPS"] == [480000, 520000] and cfg["SOLVER"]["WARMUP_ITERS"] == 1000
    text = "\n".join(notes)
    assert "SOLVER.MAX_ITER 1000 set on the command line (the schedule gives 540000)" in text
    assert "SOLVER.BASE_LR 0.01 set on the command line (the schedule gives 0.02)" in text
    assert "schedule 6x at 16 images/batch: SOLVER.STEPS (480000, 520000)" in text
    # ... and the drops the shortened run never reaches are named.
    assert "WARNING: SOLVER.STEPS (480000, 520000): the LR drop(s) at iteration(s) 480000, 520000 never" in text


def test_a_kaist_config_keeps_the_users_iterations_and_scales_the_rest(capsys):
    cfg, _ = dry_run(capsys, "--config-file", KAIST_3X, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "10")
    assert cfg["SOLVER"]["MAX_ITER"] == 10
    # 3x of 9k at 16 images is 216k at 2; its LR and periods scale to the batch of 2.
    assert cfg["SOLVER"]["BASE_LR"] == pytest.approx(0.02 * 2 / 16)
    assert cfg["SOLVER"]["STEPS"] == [21000 * 8, 25000 * 8]


def test_readme_flags_after_overrides(capsys):
    cfg, _ = dry_run(capsys, "--config-file", SCRATCH_6X, "--schedule", "6x", "SOLVER.IMS_PER_BATCH", "64")
    assert cfg["SOLVER"]["MAX_ITER"] == 135000 and cfg["SOLVER"]["BASE_LR"] == pytest.approx(0.08)
    assert main(["--config-file", SCRATCH_6X, "SOLVER.IMS_PER_BATCH", "64", "--schedule", "3x", "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["SOLVER"]["MAX_ITER"] == 67500


def test_a_schedule_too_short_for_its_drops_is_an_error(capsys):
    assert main(["--config-file", DEMO, "--schedule", "0.001x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "error: Schedule '0.001x'" in err and "too short to hold its 2 LR drops" in err


def test_schedule_flag_and_key_must_agree(capsys):
    assert main(["--config-file", DEMO, "--schedule", "2x", "SOLVER.SCHEDULE.NAME", "3x", "--dry-run"]) == 2
    assert "--schedule '2x' and SOLVER.SCHEDULE.NAME '3x' disagree" in capsys.readouterr().err


def test_a_file_contradicting_its_schedule_names_file_and_key(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f'_BASE_: "{SCRATCH_6X}"\nSOLVER:\n  MAX_ITER: 1000\n')
    with pytest.raises(ConfigError, match=f"{child} sets SOLVER.MAX_ITER 1000 but names schedule '6x'.*540000"):
        load_cfg(str(child))
    # Restating the schedule's value is fine, and so is a base's value the child's schedule replaces.
    child.write_text(f'_BASE_: "{SCRATCH_6X}"\nSOLVER:\n  MAX_ITER: 540000\n')
    assert load_cfg(str(child)).SOLVER.MAX_ITER == 540000
    child.write_text(f'_BASE_: "{SCRATCH_6X}"\nSOLVER:\n  SCHEDULE:\n    NAME: "2x"\n')
    assert load_cfg(str(child)).SOLVER.MAX_ITER == 180000
    # Without a schedule the file's values are used as written.
    child.write_text(f'_BASE_: "{SCRATCH_6X}"\nSOLVER:\n  SCHEDULE:\n    NAME: ""\n  MAX_ITER: 1000\n')
    assert load_cfg(str(child)).SOLVER.MAX_ITER == 1000


def test_a_saved_config_resolves_to_itself(tmp_path):
    cfg = load_cfg(KAIST_3X, ["SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"])
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.dump())
    assert yaml.safe_load(load_cfg(str(saved)).dump()) == yaml.safe_load(cfg.dump())


def test_the_provenance_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="detpre"):
        load_cfg(SCRATCH_6X, ["SOLVER.MAX_ITER", "10"])
    assert "SOLVER.MAX_ITER 10 set on the command line (the schedule gives 540000)" in caplog.text
    assert "never happen" in caplog.text


def test_unregistered_dataset_names_fail_with_close_matches(capsys):
    assert main(["--config-file", DEMO, "DATASETS.TRAIN", "('detpre_demo_trian',)", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "DATASETS.TRAIN: dataset 'detpre_demo_trian' is not registered (close matches: detpre_demo_train" in err
    # Subset names of registered datasets are registered on the way.
    assert resolve_cfg(DEMO, ["DATASETS.TRAIN", "('detpre_demo_train_20_s3',)"]).cfg.DATASETS.TRAIN == (
        "detpre_demo_train_20_s3",
    )


def test_odd_overrides_are_named():
    with pytest.raises(ConfigError, match="KEY VALUE pairs; 3 words given, the last is 'SEED'"):
        load_cfg(DEMO, ["SOLVER.MAX_ITER", "3", "SEED"])


def test_missing_config_and_base_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_cfg(str(tmp_path / "nowhere.yaml"))
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "gone.yaml"\n')
    with pytest.raises(ConfigError, match="gone.yaml does not exist"):
        load_cfg(str(child))
