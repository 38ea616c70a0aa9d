"""Every config under configs/ loads, builds on the CPU and takes one training step.

Configs are found by glob, so a new one is covered without touching this file. Models are
built as written (depth, width, norms, heads); only what costs time without changing the
model is shrunk: no weights are loaded (every ``*WEIGHTS`` path is blanked), the synthetic
batch holds two 64x96 images, and few proposals and RoIs are sampled.
"""

from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import detpre  # noqa: F401  (registers detpre's backbones, heads and datasets)
from detpre.analysis.study_spec import is_study_file
from detpre.config import load_cfg
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposals import settings_from_cfg
from detpre.layers.norm import resolve_norms
from detpre.solver import apply_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

from toy_configs import SMALL, drop_weights, load_config, toy_batch  # noqa: E402

from conftest import REPO  # noqa: E402

# Study files (tools/init_study.py --study) live beside the configs they name; they are tested in
# tests/analysis/test_init_study.py.
CONFIGS = sorted(p for p in REPO.glob("configs/**/*.yaml") if not is_study_file(str(p)))
IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]


def test_configs_exist():
    """Every folder of configs/ (README's table) holds the configs it is meant to."""
    per_folder = {}
    for path in CONFIGS:
        folder = str(path.parent.relative_to(REPO / "configs"))
        per_folder[folder] = per_folder.get(folder, 0) + 1
    assert per_folder == {
        ".": 1,
        "AlignDet": 2,
        "AlignDet/Demo": 2,
        "AlignDet/KAIST": 2,
        "AlignDet/finetune": 5,
        "AlignDet/pretrain": 5,
        "COCO-Scratch": 14,
        "COCO-Scratch-SmallData": 6,
        "Demo": 6,
        "KAIST": 12,
    }


def _expected_losses(cfg) -> set:
    if cfg.MODEL.META_ARCHITECTURE == "ImageDomainPretrainer":
        dense = cfg.MODEL.IMAGE_DOMAIN.METHOD == "densecl"
        return {"loss_global_contrast"} | ({"loss_dense_contrast"} if dense else set())
    box_domain = cfg.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer"
    detector = cfg.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE if box_domain else cfg.MODEL.META_ARCHITECTURE
    if detector == "RetinaNet":
        return {"loss_box_reg", "loss_box_contrast"} if box_domain else {"loss_cls", "loss_box_reg"}
    cascade = cfg.MODEL.ROI_HEADS.NAME.endswith("CascadeROIHeads")
    stages = [f"_stage{i}" for i in range(len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS))] if cascade else [""]
    expected = {"loss_rpn_cls", "loss_rpn_loc"} | {f"loss_box_reg{s}" for s in stages}
    if box_domain:  # the classifier is a projection; no mask or keypoint targets
        return expected | {f"loss_box_contrast{s}" for s in stages}
    expected |= {f"loss_cls{s}" for s in stages}
    if cfg.MODEL.MASK_ON:
        expected.add("loss_mask")
    if cfg.MODEL.KEYPOINT_ON:
        expected.add("loss_keypoint")
    return expected


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_builds_and_trains_one_step(path: Path):
    cfg = load_config(path)
    cfg.merge_from_list(SMALL)
    drop_weights(cfg)
    cfg = resolve_norms(cfg)  # as the trainer's build_model does
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(toy_batch(cfg))
    assert _expected_losses(cfg) <= set(losses), sorted(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total = sum(losses.values())
    total.backward()
    backbone = model.encoder_q.backbone if hasattr(model, "encoder_q") else getattr(model, "online", model).backbone
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_loads_as_the_tools_load_it(path: Path):
    """tools/train_net.py reads a config with detpre's loader, which checks every file of the
    ``_BASE_`` chain against the schedule it names: each shipped config passes those checks."""
    cfg = load_cfg(str(path), [])
    assert cfg.OUTPUT_DIR and cfg.SOLVER.MAX_ITER > 0


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_solver_matches_its_named_schedule(path: Path):
    """Stock Detectron2 tools read MAX_ITER/STEPS/BASE_LR: they must say what the name says."""
    cfg = load_config(path)
    if not cfg.SOLVER.SCHEDULE.NAME:
        pytest.skip(f"{path.name} has no SOLVER.SCHEDULE.NAME")
    assert cfg.SOLVER.IMS_PER_BATCH == cfg.SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH
    resolved = cfg.clone()
    apply_schedule(resolved)
    for key in ("MAX_ITER", "STEPS", "BASE_LR", "WARMUP_ITERS", "CHECKPOINT_PERIOD"):
        assert resolved.SOLVER[key] == pytest.approx(cfg.SOLVER[key]), key
    assert resolved.TEST.EVAL_PERIOD == cfg.TEST.EVAL_PERIOD


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_datasets_are_registered_and_file_says_what_it_is(path: Path):
    cfg = load_config(path)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        ensure_subset_registered(name)
        assert name in DatasetCatalog.list(), f"{path.name}: dataset {name!r} is not registered"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name} needs a top comment saying what it is"
    if cfg.MODEL.LOAD_PROPOSALS:  # the recipe of its proposal file is one the proposal tool runs
        assert len(cfg.DATASETS.PROPOSAL_FILES_TRAIN) == len(cfg.DATASETS.TRAIN), path.name
        settings_from_cfg(cfg)


def test_syncbn_configs_compute_precise_bn_as_detectron2s_do():
    """Detectron2's SyncBN configs (Misc/*syncbn*) turn TEST.PRECISE_BN on; so do detpre's."""
    from detpre.layers.norm import SYNC_NORMS

    syncbn = [p for p in CONFIGS if load_config(p).MODEL.RESNETS.NORM in SYNC_NORMS]
    assert len(syncbn) >= 3
    for path in syncbn:
        assert load_config(path).TEST.PRECISE_BN.ENABLED, path.name
