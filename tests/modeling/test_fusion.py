"""Fusion backbones and stem inflation: early fusion (4/6-channel stem), halfway fusion."""

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.engine import SimpleTrainer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

import detpre  # noqa: F401
from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.stem_inflation import inflate_input_conv
from detpre.data.dataset_mappers import MAPPER_REGISTRY
from detpre.data.datasets.kaist import register_kaist
from detpre.modeling.backbone.fusion import HalfwayFusionResNet

pytestmark = pytest.mark.usefixtures("one_thread")

from conftest import REPO  # noqa: E402

KAIST_BASE = REPO / "configs" / "KAIST" / "Base-KAIST-RCNN-FPN.yaml"
HALFWAY = "build_halfway_fusion_resnet_fpn_backbone"
EARLY = "build_scratch_resnet_fpn_backbone"
STEM = "backbone.bottom_up.stem.conv1.weight"


def tiny(cfg, fmt: str = "BGRT", backbone: str = EARLY):
    """The KAIST base config shrunk to an R18-FPN that trains in a second on a CPU."""
    cfg.merge_from_file(str(KAIST_BASE))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.INPUT.FORMAT = fmt
    channels = {"BGR": 3, "BGRT": 4, "BGRTTT": 6}[fmt]
    cfg.MODEL.PIXEL_MEAN = cfg.MODEL.PIXEL_MEAN[:3] + [40.7] * (channels - 3)
    cfg.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_STD[:3] + [20.7] * (channels - 3)
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def rgb_checkpoint(cfg, path: Path) -> dict:
    """Save a 3-channel (BGR) model of the same architecture as a Detectron2 checkpoint."""
    model = build_model(tiny(cfg.clone(), "BGR"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": state}, path)
    return state


# ------------------------------------------------------------------------ inflation


def test_inflate_input_conv_keeps_rgb_and_adds_mean_or_sum():
    weight = torch.randn(8, 3, 7, 7)
    four = inflate_input_conv(weight, 4)
    assert torch.equal(four[:, :3], weight) and torch.allclose(four[:, 3], weight.mean(1))
    six = inflate_input_conv(weight, 6)
    assert all(torch.allclose(six[:, c], weight.mean(1)) for c in (3, 4, 5))
    one = inflate_input_conv(weight, 1)
    # A grey frame on 3 channels through the RGB filters == the frame through the summed one.
    grey = torch.rand(1, 1, 16, 16)
    rgb_response = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), weight)
    assert torch.allclose(torch.nn.functional.conv2d(grey, one), rgb_response, atol=1e-5)
    assert inflate_input_conv(weight, 3) is weight
    with pytest.raises(ValueError, match="3 input channels"):
        inflate_input_conv(torch.randn(8, 4, 7, 7), 6)


def test_detectron2_checkpoint_inflates_into_a_4_channel_stem(cfg, tmp_path, caplog):
    rgb = rgb_checkpoint(cfg, tmp_path / "rgb.pth")
    model = build_model(tiny(cfg, "BGRT"))
    with caplog.at_level(logging.INFO, logger="detpre.checkpoint.stem_inflation"):
        DetpreCheckpointer(model).load(str(tmp_path / "rgb.pth"))
    state = model.state_dict()
    assert torch.equal(state[STEM][:, :3], rgb[STEM])
    assert torch.allclose(state[STEM][:, 3], rgb[STEM].mean(1))
    assert all(torch.equal(state[k], v) for k, v in rgb.items() if k != STEM and k in state)
    assert f"Inflated {STEM} from 3 to 4 input channels" in caplog.text


def test_caffe2_pickle_inflates_into_a_6_channel_stem(cfg, tmp_path, caplog):
    rgb = rgb_checkpoint(cfg, tmp_path / "unused.pth")
    blobs = {
        "conv1_w": rgb[STEM].numpy(),
        "res2_0_branch2a_w": rgb["backbone.bottom_up.res2.0.conv1.weight"].numpy(),
    }
    with open(tmp_path / "R-18.pkl", "wb") as f:
        pickle.dump(blobs, f)
    model = build_model(tiny(cfg, "BGRTTT"))
    with caplog.at_level(logging.INFO, logger="detpre.checkpoint.stem_inflation"):
        DetpreCheckpointer(model).load(str(tmp_path / "R-18.pkl"))
    stem = model.state_dict()[STEM]
    assert stem.shape[1] == 6 and torch.equal(stem[:, :3], rgb[STEM])
    assert torch.allclose(stem[:, 5], rgb[STEM].mean(1))
    assert torch.equal(model.backbone.bottom_up.res2[0].conv1.weight, rgb["backbone.bottom_up.res2.0.conv1.weight"])
    assert "from 3 to 6 input channels" in caplog.text


# --------------------------------------------------------------------- halfway fusion


def test_halfway_fusion_structure_and_both_streams_matter(cfg):
    tiny(cfg, "BGRT", HALFWAY)
    cfg.MODEL.FUSION.STAGE = "res3"
    backbone = build_backbone(cfg, ShapeSpec(channels=4))
    bottom_up = backbone.bottom_up
    assert isinstance(bottom_up, HalfwayFusionResNet)
    assert bottom_up.thermal.stage_names == ("res2", "res3")
    assert bottom_up.thermal.stem.conv1.weight.shape[1] == 1
    assert bottom_up.visible.stem.conv1.weight.shape[1] == 3
    assert set(bottom_up.fuse.keys()) == {"res2", "res3"}  # res2 is fused too: the FPN reads it
    reference = build_backbone(tiny(cfg.clone(), "BGRT", EARLY), ShapeSpec(channels=4))
    assert bottom_up.output_shape() == reference.bottom_up.output_shape()
    x = torch.randn(1, 4, 64, 96)
    features = backbone(x)
    assert {k: v.shape for k, v in features.items()} == {k: v.shape for k, v in reference(x).items()}
    hotter = x.clone()
    hotter[:, 3] += 1.0
    changed = backbone(hotter)
    assert all(not torch.allclose(features[k], changed[k]) for k in features)  # thermal reaches all levels
    sum(f.sum() for f in changed.values()).backward()
    assert bottom_up.thermal.stem.conv1.weight.grad.abs().sum() > 0


def test_stream_weights_load_from_a_detector_checkpoint(cfg, tmp_path):
    rgb = rgb_checkpoint(cfg, tmp_path / "rgb.pth")
    tiny(cfg, "BGRT", HALFWAY)
    cfg.MODEL.FUSION.VISIBLE_WEIGHTS = str(tmp_path / "rgb.pth")
    cfg.MODEL.FUSION.THERMAL_WEIGHTS = str(tmp_path / "rgb.pth")
    bottom_up = build_backbone(cfg, ShapeSpec(channels=4)).bottom_up
    assert torch.equal(bottom_up.visible.stem.conv1.weight, rgb[STEM])
    assert torch.equal(bottom_up.visible.res5[0].conv1.weight, rgb["backbone.bottom_up.res5.0.conv1.weight"])
    assert torch.allclose(bottom_up.thermal.stem.conv1.weight[:, 0], rgb[STEM].sum(1))
    assert torch.equal(bottom_up.thermal.res3[1].conv2.weight, rgb["backbone.bottom_up.res3.1.conv2.weight"])


def test_halfway_fusion_config_errors(cfg):
    tiny(cfg, "BGRT", HALFWAY)
    cfg.MODEL.FUSION.STAGE = "res6"
    with pytest.raises(ValueError, match="MODEL.FUSION.STAGE 'res6'"):
        build_backbone(cfg, ShapeSpec(channels=4))
    cfg.MODEL.FUSION.STAGE = "res3"
    cfg.INPUT.FORMAT = "TTT"
    with pytest.raises(ValueError, match="needs visible and thermal channels"):
        build_backbone(cfg, ShapeSpec(channels=3))


# --------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("backbone, fmt", [(EARLY, "BGRTTT"), (HALFWAY, "BGRT")])
def test_fusion_detectors_train_on_the_fixture(cfg, shared_data, backbone, fmt):
    name = "kaist_fixture_train"
    if name not in DatasetCatalog.list():
        register_kaist(name, str(shared_data / "kaist-fixture"), "test-fixture", "original")
    tiny(cfg, fmt, backbone)
    cfg.DATASETS.TRAIN = (name,)
    torch.manual_seed(0)
    model = build_model(cfg)
    stem = model.backbone.bottom_up.stem if backbone == EARLY else model.backbone.bottom_up.thermal.stem
    before = stem.conv1.weight.detach().clone()
    mapper = MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, is_train=True)
    loader = build_detection_train_loader(cfg, mapper=mapper)
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    trainer.train(0, 3)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert not torch.equal(stem.conv1.weight, before)  # the thermal input's first layer learns


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs" / "KAIST").glob("faster_rcnn_*.yaml")))
def test_kaist_configs_build(cfg, config):
    """Each KAIST config: the schedule resolves, the mapper accepts it, the backbone builds."""
    from detpre.solver import apply_schedule

    cfg.merge_from_file(str(REPO / "configs" / "KAIST" / config))
    apply_schedule(cfg)
    assert cfg.SOLVER.MAX_ITER in (9000, 27000)
    assert cfg.DATASETS.TRAIN == ("kaist_train_all02_paired",)
    assert cfg.DATASETS.TEST == ("kaist_test_all20_improved",)
    mapper = MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, is_train=True)
    assert mapper.format.channels == len(cfg.MODEL.PIXEL_MEAN) == 4
    cfg.MODEL.FUSION.VISIBLE_WEIGHTS = cfg.MODEL.FUSION.THERMAL_WEIGHTS = ""  # no download here
    backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    assert set(backbone.output_shape()) == {"p2", "p3", "p4", "p5", "p6"}
    assert ("halfway" in config) == isinstance(backbone.bottom_up, HalfwayFusionResNet)
