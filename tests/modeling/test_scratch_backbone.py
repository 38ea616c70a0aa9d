"""The from-scratch ResNet-FPN backbone and the single-process SyncBN resolution."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

import detpre  # noqa: F401  (registers the backbone)
from detpre import add_detpre_config
from detpre.layers.norm import resolve_norms

from conftest import REPO  # noqa: E402

SCRATCH = "build_scratch_resnet_fpn_backbone"


def _cfg(path: str = "", *opts):
    cfg = get_cfg()
    add_detpre_config(cfg)
    if path:
        cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def _small(*opts):
    """A GN R18-FPN on detpre's base config: cheap, but the same code path as R50."""
    return _cfg(
        str(REPO / "configs" / "Base-Scratch-RCNN-FPN.yaml"),
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.FPN.OUT_CHANNELS",
        "64",
        *opts,
    )


@pytest.fixture(scope="module")
def r50_models():
    """Detectron2's own from-scratch GN Mask R-CNN, and the same config on detpre's backbone."""
    torch.manual_seed(0)
    d2_cfg = _cfg(model_zoo.get_config_file("Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"))
    ours_cfg = d2_cfg.clone()
    ours_cfg.MODEL.BACKBONE.NAME = SCRATCH
    return build_model(d2_cfg), build_model(ours_cfg)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_detectron2_scratch_gn_mask_rcnn(r50_models):
    d2_model, ours = r50_models
    assert _num_params(ours) == _num_params(d2_model)
    # Same names and shapes too, so checkpoints move between the two.
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in d2_model.state_dict().items()}
    # detpre's own R50 GN config builds that same network.
    mine = build_model(_cfg(str(REPO / "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml")))
    assert _num_params(mine) == _num_params(d2_model)


def test_gn_in_every_layer_and_nothing_frozen(r50_models):
    backbone = r50_models[1].backbone
    convs = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    # stem (1) + 16 bottlenecks x 3 + 4 projection shortcuts + 4 lateral + 4 output FPN convs
    assert len(convs) == 1 + 16 * 3 + 4 + 8
    for name, conv in convs:
        assert isinstance(conv.norm, nn.GroupNorm), name
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    assert all(p.requires_grad for p in r50_models[1].parameters())


def test_resnet_convs_have_he_init(r50_models):
    # MSRA fill: normal with std sqrt(2 / fan_out), fan_out = out_channels * kh * kw.
    conv = r50_models[1].backbone.bottom_up.res4[1].conv2
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)


@pytest.mark.parametrize(
    "opts, match",
    [
        (("MODEL.BACKBONE.FREEZE_AT", "2"), "MODEL.BACKBONE.FREEZE_AT"),
        (("MODEL.RESNETS.NORM", "FrozenBN"), "MODEL.RESNETS.NORM is 'FrozenBN'"),
        (("MODEL.FPN.NORM", ""), "MODEL.FPN.NORM is empty"),
    ],
)
def test_refuses_frozen_or_unnormalized_layers(opts, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(_small(*opts))


def _blocks(backbone):
    return [block for stage in backbone.bottom_up.stages for block in stage]


@pytest.mark.parametrize("depth_opts, last", [((), "conv2"), (("MODEL.RESNETS.DEPTH", "50"), "conv3")])
def test_zero_init_last_norm_makes_blocks_identity(depth_opts, last):
    torch.manual_seed(0)
    off = build_backbone(_small(*depth_opts))
    assert all(getattr(b, last).norm.weight.abs().min() > 0 for b in _blocks(off))

    backbone = build_backbone(_small("MODEL.RESNETS.ZERO_INIT_LAST_NORM", "True", *depth_opts))
    blocks = _blocks(backbone)
    assert len(blocks) == (8 if not depth_opts else 16)
    for block in blocks:
        assert torch.count_nonzero(getattr(block, last).norm.weight) == 0
        # Only the last norm: the others keep their scale of 1.
        assert torch.all(block.conv1.norm.weight == 1)
        x = torch.randn(2, block.in_channels, 8, 8)
        # (blocks that change resolution or width always have a projection shortcut)
        shortcut = block.shortcut(x) if block.shortcut is not None else x
        torch.testing.assert_close(block(x), F.relu(shortcut))


@pytest.mark.parametrize("channels", [4, 6])
def test_stem_follows_pixel_mean_channels(channels):
    mean = [100.0 + i for i in range(channels)]
    std = [50.0] * channels
    backbone = build_backbone(_small("MODEL.PIXEL_MEAN", str(mean), "MODEL.PIXEL_STD", str(std)))
    assert backbone.bottom_up.stem.conv1.weight.shape[1] == channels
    out = backbone(torch.randn(1, channels, 64, 96))
    assert sorted(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert out["p2"].shape == (1, 64, 16, 24)


def _syncbn_cfg():
    return _small(
        "MODEL.RESNETS.NORM",
        "SyncBN",
        "MODEL.FPN.NORM",
        "SyncBN",
        "MODEL.ROI_BOX_HEAD.NORM",
        "SyncBN",
        "MODEL.ROI_MASK_HEAD.NORM",
        "SyncBN",
    )


def test_resolve_norms_one_process(caplog):
    cfg = _syncbn_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NORM = "GN"
    cfg.freeze()
    with caplog.at_level(logging.INFO, logger="detpre.layers.norm"):
        out = resolve_norms(cfg, world_size=1)
    assert (out.MODEL.RESNETS.NORM, out.MODEL.FPN.NORM, out.MODEL.ROI_MASK_HEAD.NORM) == ("BN",) * 3
    assert out.MODEL.ROI_BOX_HEAD.NORM == "GN"
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and out.is_frozen()
    assert "MODEL.ROI_MASK_HEAD.NORM: SyncBN -> BN" in caplog.text
    assert "MODEL.ROI_BOX_HEAD.NORM" not in caplog.text


def test_resolve_norms_several_processes():
    cfg = _syncbn_cfg()
    on_cpu = resolve_norms(cfg, world_size=4)
    assert on_cpu.MODEL.RESNETS.NORM == "naiveSyncBN" and on_cpu.MODEL.ROI_BOX_HEAD.NORM == "naiveSyncBN"
    cfg.MODEL.DEVICE = "cuda"
    assert resolve_norms(cfg, world_size=4).MODEL.RESNETS.NORM == "SyncBN"
    with pytest.raises(ValueError, match="world_size"):
        resolve_norms(cfg, world_size=0)


@pytest.fixture
def one_process_group(tmp_path):
    """An initialised gloo group of one process: torch's SyncBatchNorm refuses CPU tensors here."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_syncbn_config_trains_in_one_process(one_process_group):
    cfg = _syncbn_cfg()
    # Few proposals and RoIs: the heads' convolutions dominate the CPU time otherwise.
    cfg.merge_from_list(["MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"])
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        nn.SyncBatchNorm(4).train()(torch.randn(2, 4, 3, 3))  # what resolution avoids
    model = build_model(resolve_norms(cfg))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[0, 8:50, 8:40] = True
    inst = Instances(
        (64, 96),
        gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 50.0]])),
        gt_classes=torch.tensor([0]),
        gt_masks=BitMasks(mask),
    )
    batch = [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "instances": inst}] * 2
    model.train()
    with EventStorage(0):
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_backbone_alone_resolves_syncbn(one_process_group):
    from detpre.modeling.build import build_backbone as detpre_build_backbone

    backbone = detpre_build_backbone(_syncbn_cfg())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in backbone.modules())
    backbone.train()
    assert backbone(torch.randn(2, 3, 64, 64))["p6"].shape == (2, 64, 1, 1)
