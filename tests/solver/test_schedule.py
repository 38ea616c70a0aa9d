"""The kx schedule rule of *Rethinking ImageNet Pre-training*."""

import pytest
from detectron2 import model_zoo

from detpre.solver import apply_schedule, parse_schedule
from detpre.solver.schedule import resolve_schedule


@pytest.mark.parametrize("k", [1, 2, 3, 6, 9])
def test_reference_batch_follows_the_paper(cfg, k):
    apply_schedule(cfg, f"{k}x")
    assert cfg.SOLVER.MAX_ITER == 90000 * k
    assert cfg.SOLVER.STEPS == (90000 * k - 60000, 90000 * k - 20000)
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.02)


def test_9x_at_64_images_reproduces_detectron2s_config(cfg):
    """Detectron2's scratch_mask_rcnn_R_50_FPN_9x_gn.yaml, derived from --schedule 9x."""
    reference = model_zoo.get_config("Misc/scratch_mask_rcnn_R_50_FPN_9x_gn.yaml")
    cfg.SOLVER.IMS_PER_BATCH = 64
    apply_schedule(cfg, "9x")
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (202500, (187500, 197500))
    assert cfg.SOLVER.MAX_ITER == reference.SOLVER.MAX_ITER
    assert tuple(cfg.SOLVER.STEPS) == tuple(reference.SOLVER.STEPS)
    assert cfg.SOLVER.BASE_LR == pytest.approx(reference.SOLVER.BASE_LR)


def test_everything_scales_linearly_with_the_batch(cfg):
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.SCHEDULE.EVAL_PERIOD = 5000
    apply_schedule(cfg, "2x")
    assert cfg.SOLVER.MAX_ITER == 360000
    assert cfg.SOLVER.STEPS == (240000, 320000)
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.01)
    assert cfg.SOLVER.WARMUP_ITERS == 2000
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 10000
    assert cfg.TEST.EVAL_PERIOD == 10000


def test_fractional_schedules(cfg):
    apply_schedule(cfg, "2.5x")
    assert cfg.SOLVER.MAX_ITER == 225000
    assert cfg.SOLVER.STEPS == (165000, 205000)
    # Shorter than the last 60k: the drops keep their 1x places (1/3 and 7/9 of the run).
    apply_schedule(cfg, "0.5x")
    assert cfg.SOLVER.MAX_ITER == 45000
    assert cfg.SOLVER.STEPS == (15000, 35000)


def test_periods_never_exceed_the_run(cfg):
    cfg.SOLVER.SCHEDULE.ITERS_PER_X = 300
    cfg.SOLVER.SCHEDULE.STEPS_FROM_END = (200, 60)
    cfg.SOLVER.SCHEDULE.EVAL_PERIOD = 100000
    apply_schedule(cfg, "1x")
    assert cfg.SOLVER.MAX_ITER == 300
    assert cfg.SOLVER.STEPS == (100, 240)
    assert cfg.SOLVER.WARMUP_ITERS == 300
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 300
    assert cfg.TEST.EVAL_PERIOD == 300


def test_resolving_twice_changes_nothing(cfg):
    cfg.SOLVER.IMS_PER_BATCH = 64
    apply_schedule(cfg, "6x")
    first = cfg.dump()
    apply_schedule(cfg)  # from SOLVER.SCHEDULE.NAME, as when a saved config is reloaded
    assert cfg.dump() == first


def test_no_schedule_leaves_the_solver_alone(cfg):
    before = cfg.dump()
    apply_schedule(cfg)
    assert cfg.dump() == before


@pytest.mark.parametrize("bad", ["6", "x", "six", "-1x", "0x", "1.5.0x", "6y"])
def test_unknown_schedule_is_a_clear_error(cfg, bad):
    with pytest.raises(ValueError, match="(?i)schedule"):
        apply_schedule(cfg, bad)


def test_parse():
    assert parse_schedule("6x") == 6
    assert parse_schedule(" 0.5X ") == 0.5
    assert parse_schedule(".25x") == 0.25


def test_bad_steps_from_end(cfg):
    cfg.SOLVER.SCHEDULE.STEPS_FROM_END = (100000, 20000)
    with pytest.raises(ValueError, match="STEPS_FROM_END"):
        resolve_schedule(cfg, "1x")
