"""torchvision / timm ResNets converted to Detectron2 names compute the same features.

BatchNorm parameters and statistics are randomized first: with the defaults (weight 1,
bias 0, mean 0, var 1) every norm layer is the same function and a mapping that swapped
two of them would still pass.
"""

import pickle

import pytest
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from detpre.analysis.features import load_backbone
from detpre.checkpoint.convert import convert_resnet_state_dict, read_state_dict, resnet_config

from conftest import load_tool

main = load_tool("convert_weights").main

ARCHS = {"resnet18": 18, "resnet50": 50}


def torchvision_resnet(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@torch.no_grad()
def layer4(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def detectron2_resnet(depth: int, norm: str):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


@pytest.mark.parametrize("arch,out_ext,norm", [("resnet18", ".pth", "BN"), ("resnet50", ".pkl", "FrozenBN")])
def test_converted_resnet_loads_completely_and_res5_equals_layer4(arch, out_ext, norm, tmp_path, capsys):
    model = torchvision_resnet(arch)
    src, dst = tmp_path / f"{arch}.pth", tmp_path / f"{arch}_d2{out_ext}"
    torch.save(model.state_dict(), src)
    assert main([str(src), str(dst), "--format", "torchvision"]) == 0
    printed = capsys.readouterr().out
    assert "0 missing key(s)" in printed and "0 unexpected key(s)" in printed

    resnet = detectron2_resnet(ARCHS[arch], norm)
    DetectionCheckpointer(resnet).load(str(dst))
    written = pickle.loads(dst.read_bytes()) if out_ext == ".pkl" else torch.load(dst)
    assert written["matching_heuristics"] and written["__author__"] == "torchvision"
    # Every parameter and buffer of the Detectron2 ResNet comes from the file: none missing.
    # (BN's step counters are left out on purpose: with a fixed momentum nothing reads them.)
    for key, value in resnet.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        assert key in written["model"], key
        assert torch.equal(value, torch.as_tensor(written["model"][key])), key

    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        ours = resnet(x)["res5"]
    torch.testing.assert_close(ours, layer4(model, x), rtol=1e-4, atol=1e-5)


def test_converted_weights_fill_the_bottom_up_of_an_fpn_detector(tmp_path):
    """Inside a detector the names gain ``backbone.bottom_up.``: Detectron2's matching places them."""
    model = torchvision_resnet("resnet18")
    src, dst, cfg_out = tmp_path / "r18.pth", tmp_path / "r18.pkl", tmp_path / "r18.yaml"
    torch.save(model.state_dict(), src)
    assert main([str(src), str(dst), "--format", "torchvision", "--config-out", str(cfg_out)]) == 0
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_file(str(cfg_out))  # DEPTH 18, STRIDE_IN_1X1 False, RGB, ImageNet statistics, the weights
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.WEIGHTS == str(dst)
    extractor = load_backbone(cfg, cfg.MODEL.WEIGHTS, ["res5"])  # raises if anything is missing
    image = torch.rand(1, 3, 64, 64) * 255
    normalized = (image - torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(cfg.MODEL.PIXEL_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        torch.testing.assert_close(extractor(image)["res5"], layer4(model, normalized), rtol=1e-4, atol=1e-4)


def test_timm_training_checkpoint_is_unwrapped(tmp_path):
    model = torchvision_resnet("resnet18")  # timm's plain ResNets use the same module names
    src = tmp_path / "timm_checkpoint.pth.tar"
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DistributedDataParallel
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": wrapped}, src)
    converted, dropped = convert_resnet_state_dict(read_state_dict(str(src), "timm"))
    assert set(dropped) >= {"fc.weight", "fc.bias"}
    values = resnet_config(converted)
    assert values["MODEL.RESNETS.DEPTH"] == 18 and values["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert main([str(src), str(tmp_path / "out.pkl"), "--format", "timm"]) == 0


def test_architecture_is_read_off_the_weights():
    values = resnet_config(convert_resnet_state_dict(torchvision.models.resnext50_32x4d().state_dict())[0])
    keys = ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP")
    assert tuple(values[f"MODEL.RESNETS.{k}"] for k in keys) == (50, 32, 4)


def test_incomplete_or_foreign_weights_are_reported_by_name(tmp_path, capsys):
    state = torchvision_resnet("resnet18").state_dict()
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "cut.pth")
    assert main([str(tmp_path / "cut.pth"), str(tmp_path / "cut.pkl"), "--format", "torchvision"]) == 1
    assert "res5.1.conv2.weight" in capsys.readouterr().out
    deep_stem = {"conv1.0.weight": torch.zeros(32, 3, 3, 3), **torchvision_resnet("resnet18").state_dict()}
    torch.save(deep_stem, tmp_path / "resnet18d.pth")
    assert main([str(tmp_path / "resnet18d.pth"), str(tmp_path / "d.pkl"), "--format", "timm"]) == 2
    assert "conv1.0.weight" in capsys.readouterr().err
    torch.save([1, 2, 3], tmp_path / "junk.pth")
    assert main([str(tmp_path / "junk.pth"), str(tmp_path / "j.pkl"), "--format", "timm"]) == 2
    assert "junk.pth" in capsys.readouterr().err
