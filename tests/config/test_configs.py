"""Every config under configs/ loads, builds on the CPU and takes one training step.

Configs are found by glob, so a new one is covered without touching this file. Models are
built as written (depth, width, norms, heads); only what costs time without changing the
model is shrunk: no weights are loaded (every ``*WEIGHTS`` path is blanked), the synthetic
batch holds two 64x96 images, and few proposals and RoIs are sampled.
"""

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

import detpre  # noqa: F401  (registers detpre's backbones, heads and datasets)
from detpre import add_detpre_config
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.modeling.norm import resolve_sync_norm
from detpre.solver import apply_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

from conftest import REPO  # noqa: E402

CONFIGS = sorted(REPO.glob("configs/**/*.yaml"))
IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]
H, W = 64, 96
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "16",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "20",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "8",
]


def _load(path: Path):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def test_configs_exist():
    assert len(CONFIGS) >= 15


def _drop_weights(node) -> None:
    """Blank every string key named ``*WEIGHTS`` (MODEL.WEIGHTS, per-stream weights of fusion
    backbones, ...): nothing is downloaded, and random init is all a build-and-step needs."""
    for key, value in node.items():
        if isinstance(value, CfgNode):
            _drop_weights(value)
        elif key.endswith("WEIGHTS") and isinstance(value, str):
            node[key] = ""


def _instances(cfg, seed: int) -> Instances:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0], [50.0, 30.0, 80.0, 62.0]])
    n = len(boxes)
    inst = Instances((H, W))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (n,), generator=g)
    if cfg.MODEL.MASK_ON:
        masks = torch.zeros(n, H, W, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
    if cfg.MODEL.KEYPOINT_ON:
        k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
        t = torch.rand(n, k, 2, generator=g)
        xy = boxes[:, None, :2] + t * (boxes[:, None, 2:] - boxes[:, None, :2])
        inst.gt_keypoints = Keypoints(torch.cat([xy, torch.full((n, k, 1), 2.0)], dim=2))
    return inst


def _batch(cfg):
    """Two synthetic images; for box-domain pre-training, each in two views whose instances
    are the proposals (with their identities)."""
    channels = len(cfg.MODEL.PIXEL_MEAN)
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (channels, H, W), dtype=torch.uint8, generator=g),
            "instances": _instances(cfg, seed),
            "height": H,
            "width": W,
        }
        for seed in range(2)
    ]
    if cfg.MODEL.META_ARCHITECTURE != "BoxDomainPretrainer":
        return batch
    for x in batch:
        x["instances"].gt_ids = torch.arange(len(x["instances"]))
    return [{"views": [x, dict(x, image=x["image"].flip(-1))]} for x in batch]


def _expected_losses(cfg) -> set:
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
    cfg = _load(path)
    cfg.merge_from_list(SMALL)
    _drop_weights(cfg)
    cfg = resolve_sync_norm(cfg)  # as the trainer's build_model does
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(_batch(cfg))
    assert _expected_losses(cfg) <= set(losses), sorted(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total = sum(losses.values())
    total.backward()
    backbone = getattr(model, "online", model).backbone
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_solver_matches_its_named_schedule(path: Path):
    """Stock Detectron2 tools read MAX_ITER/STEPS/BASE_LR: they must say what the name says."""
    cfg = _load(path)
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
    cfg = _load(path)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        ensure_subset_registered(name)
        assert name in DatasetCatalog.list(), f"{path.name}: dataset {name!r} is not registered"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name} needs a top comment saying what it is"


def test_syncbn_configs_compute_precise_bn_as_detectron2s_do():
    """Detectron2's SyncBN configs (Misc/*syncbn*) turn TEST.PRECISE_BN on; so do detpre's."""
    from detpre.modeling.norm import SYNC_NORMS

    syncbn = [p for p in CONFIGS if _load(p).MODEL.RESNETS.NORM in SYNC_NORMS]
    assert len(syncbn) >= 3
    for path in syncbn:
        assert _load(path).TEST.PRECISE_BN.ENABLED, path.name
