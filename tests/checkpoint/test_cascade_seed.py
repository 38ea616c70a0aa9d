"""Seeding Cascade R-CNN stages from a single-head Mask R-CNN checkpoint."""

from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import detpre  # noqa: F401  (registers SeededCascadeROIHeads)
from detpre import add_detpre_config
from detpre.checkpoint.cascade_seed import has_single_head, seed_cascade_from_single_head

from conftest import load_tool

convert_main = load_tool("convert_to_cascade").main

from conftest import REPO  # noqa: E402

CASCADE_YAML = REPO / "configs/COCO-Scratch/cascade_mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"
MASK_YAML = REPO / "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"
NUM_CLASSES = 3
# A small R18 version of the configs, identical in structure.
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_HEADS.NUM_CLASSES",
    str(NUM_CLASSES),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
]


def _cfg(path: Path, *opts):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(TINY + list(opts))
    return cfg


def _single_head_model(agnostic: bool = False, *opts):
    torch.manual_seed(1)
    model = build_model(_cfg(MASK_YAML, "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", str(agnostic), *opts))
    # "Trained" regressors: per-class rows that differ, so averaging is visible.
    with torch.no_grad():
        model.roi_heads.box_predictor.bbox_pred.weight.normal_()
        model.roi_heads.box_predictor.bbox_pred.bias.normal_()
    return model


def _save(model, path: Path) -> str:
    torch.save({"model": model.state_dict()}, path)  # Detectron2's checkpoint format
    return str(path)


def _ratios(cfg):
    single = torch.tensor(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
    return [torch.tensor(w) / single for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS]


def _batch():
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[0, 8:50, 8:40] = mask[1, 10:60, 30:90] = True
    inst = Instances(
        (64, 96),
        gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]])),
        gt_classes=torch.tensor([0, 2]),
        gt_masks=BitMasks(mask),
    )
    return [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "instances": inst}] * 2


def test_checkpointer_seeds_every_stage_from_mask_rcnn(tmp_path):
    single = _single_head_model(agnostic=False)
    path = _save(single, tmp_path / "mask_rcnn.pth")
    cfg = _cfg(CASCADE_YAML)
    cascade = build_model(cfg)
    assert type(cascade.roi_heads).__name__ == "SeededCascadeROIHeads"
    DetectionCheckpointer(cascade).load(path)

    src = single.state_dict()
    got = cascade.state_dict()
    for key, value in src.items():
        if not key.startswith(("roi_heads.box_head.", "roi_heads.box_predictor.")):
            torch.testing.assert_close(got[key], value)  # backbone, RPN, mask head: as saved
    w = src["roi_heads.box_predictor.bbox_pred.weight"].view(NUM_CLASSES, 4, -1).mean(0)
    b = src["roi_heads.box_predictor.bbox_pred.bias"].view(NUM_CLASSES, 4).mean(0)
    for stage, ratio in enumerate(_ratios(cfg)):
        for key, value in src.items():
            if key.startswith("roi_heads.box_head."):
                torch.testing.assert_close(got[key.replace("box_head.", f"box_head.{stage}.")], value)
        torch.testing.assert_close(
            got[f"roi_heads.box_predictor.{stage}.cls_score.weight"], src["roi_heads.box_predictor.cls_score.weight"]
        )
        torch.testing.assert_close(got[f"roi_heads.box_predictor.{stage}.bbox_pred.weight"], w * ratio[:, None])
        torch.testing.assert_close(got[f"roi_heads.box_predictor.{stage}.bbox_pred.bias"], b * ratio)
    assert ratio.tolist() == [3.0, 3.0, 3.0, 3.0]  # the last stage's (30, 30, 15, 15) / (10, 10, 5, 5)

    # Torch itself sees no missing or unexpected key.
    build_model(cfg).load_state_dict(src, strict=True)

    cascade.train()
    with EventStorage(0):
        losses = cascade(_batch())
    assert {f"loss_box_reg_stage{i}" for i in range(3)} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    cascade.eval()
    with torch.no_grad():
        (out,) = cascade(_batch()[:1])
    assert out["instances"].has("pred_masks") or len(out["instances"]) == 0


def test_seeded_stages_decode_the_single_heads_boxes():
    """The BBOX_REG_WEIGHTS rescaling: every stage predicts the boxes the single head did."""
    single = _single_head_model(agnostic=True)
    cfg = _cfg(CASCADE_YAML)
    cascade = build_model(cfg)
    cascade.load_state_dict(single.state_dict())

    x = torch.randn(5, cfg.MODEL.ROI_BOX_HEAD.FC_DIM)
    proposals = Instances((64, 96), proposal_boxes=Boxes(torch.tensor([[4.0, 4.0, 30.0, 40.0]] * 5)))
    predictor = single.roi_heads.box_predictor
    (expected,) = predictor.predict_boxes(predictor(x), [proposals])
    for stage_predictor in cascade.roi_heads.box_predictor:
        (boxes,) = stage_predictor.predict_boxes(stage_predictor(x), [proposals])
        torch.testing.assert_close(boxes, expected)
    assert not torch.allclose(expected, proposals.proposal_boxes.tensor)  # the deltas matter


def test_cascade_checkpoints_load_unchanged_and_seeding_can_be_off(tmp_path):
    cfg = _cfg(CASCADE_YAML)
    trained = build_model(cfg)
    path = _save(trained, tmp_path / "cascade.pth")
    assert not has_single_head(trained.state_dict())
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(path)
    loaded = fresh.state_dict()
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded[key], value)

    single = _single_head_model()
    off = build_model(_cfg(CASCADE_YAML, "MODEL.ROI_BOX_CASCADE_HEAD.SEED_FROM_SINGLE_HEAD", "False"))
    before = off.roi_heads.box_head[0].fc1.weight.clone()
    result = off.load_state_dict(single.state_dict(), strict=False)
    assert "roi_heads.box_head.fc1.weight" in result.unexpected_keys
    assert "roi_heads.box_head.0.fc1.weight" in result.missing_keys
    torch.testing.assert_close(off.roi_heads.box_head[0].fc1.weight, before)


def test_mismatched_box_heads_are_a_clear_error():
    single = _single_head_model(False, "MODEL.ROI_BOX_HEAD.FC_DIM", "128")
    cascade = build_model(_cfg(CASCADE_YAML))
    with pytest.raises(ValueError, match=r"roi_heads.box_head.0.fc1.weight.*same box head"):
        cascade.load_state_dict(single.state_dict())


def test_pure_remap_reports_and_leaves_input_alone():
    single = _single_head_model().state_dict()
    before = {k: v.clone() for k, v in single.items()}
    out, report = seed_cascade_from_single_head(
        single, num_stages=2, single_reg_weights=(10, 10, 5, 5), stage_reg_weights=[(10, 10, 5, 5), (20, 20, 10, 10)]
    )
    assert single.keys() == before.keys() and all(torch.equal(single[k], before[k]) for k in single)
    assert not has_single_head(out)
    moved = [k for k in single if k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor."))]
    assert set(report.seeded) == set(moved) and report.num_keys_written == 2 * len(moved)
    assert len(out) == len(single) + len(moved)
    text = report.format()
    assert "roi_heads.box_head.fc1.weight -> roi_heads.box_head.{0,1}.fc1.weight: copied" in text
    assert f"class-specific ({NUM_CLASSES} classes) averaged to class-agnostic" in text

    with pytest.raises(ValueError, match="both a single box head"):
        seed_cascade_from_single_head(
            {**single, "roi_heads.box_head.0.fc1.weight": single["roi_heads.box_head.fc1.weight"]},
            num_stages=1,
            single_reg_weights=(10, 10, 5, 5),
            stage_reg_weights=[(10, 10, 5, 5)],
        )
    with pytest.raises(ValueError, match="output rows"):
        bad = dict(single)
        bad["roi_heads.box_predictor.bbox_pred.bias"] = torch.zeros(7)
        seed_cascade_from_single_head(
            bad, num_stages=1, single_reg_weights=(10, 10, 5, 5), stage_reg_weights=[(10, 10, 5, 5)]
        )


def test_convert_to_cascade_tool(tmp_path, capsys):
    single = _single_head_model()
    src = _save(single, tmp_path / "mask_rcnn.pth")
    out = str(tmp_path / "cascade_init.pth")
    assert convert_main([src, out, "--config-file", str(CASCADE_YAML), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "Seeded 3 cascade stages from the single box head" in printed
    assert "roi_heads.box_predictor.bbox_pred.weight -> roi_heads.box_predictor.{0,1,2}.bbox_pred.weight" in printed
    assert "not in" not in printed  # no cascade key left at init

    # Stock Detectron2 loading (no seeding hook involved) gives what the hook gives.
    written = torch.load(out)
    assert set(written) == {"model"} and not has_single_head(written["model"])
    via_tool = build_model(_cfg(CASCADE_YAML, "MODEL.ROI_HEADS.NAME", "CascadeROIHeads"))
    DetectionCheckpointer(via_tool).load(out)
    via_hook = build_model(_cfg(CASCADE_YAML))
    DetectionCheckpointer(via_hook).load(src)
    tool_state = via_tool.state_dict()
    for key, value in via_hook.state_dict().items():
        torch.testing.assert_close(tool_state[key], value)

    cascade_ckpt = _save(via_tool, tmp_path / "already_cascade.pth")
    assert convert_main([cascade_ckpt, str(tmp_path / "x.pth"), "--config-file", str(CASCADE_YAML), *TINY]) == 2
    assert "no single-head box keys" in capsys.readouterr().err
