"""torchvision / timm ResNet state dicts in Detectron2's names.

ImageNet classifiers from torchvision or timm are the usual "ImageNet initialization"
outside Detectron2's MSRA model zoo. Their ResNets are Detectron2's ResNet with other
names (``layer1.0.bn2`` is ``res2.0.conv2.norm``) and with the stride on the 3x3 conv
(``STRIDE_IN_1X1 False``), RGB input and ImageNet pixel statistics.

The converted file is what Detectron2's own ``tools/convert-torchvision-to-d2.py`` writes
(``{"model", "__author__", "matching_heuristics": True}``), so ``DetectionCheckpointer``
places it under ``backbone.bottom_up.`` of any detector; unlike that script, names that
belong to no Detectron2 ResNet (deep stems, SE blocks, anti-aliasing) are an error rather
than silently left behind, and the architecture keys the config needs are derived from
the weights.
"""

import pickle
import re
from typing import Any, Dict, List, Tuple

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from ..utils.file_io import atomic_write
from .load_report import LoadReport
from .reading import CheckpointError, load_checkpoint_file

FORMATS = ("torchvision", "timm")
#: ImageNet statistics used by torchvision and timm, in RGB order and 0-255 units.
IMAGENET_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_PIXEL_STD = [58.395, 57.12, 57.375]
_BLOCKS_TO_DEPTH = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
# (pattern, replacement) over the whole key; a block's "bnK" is the norm of its "convK".
_RULES = [
    (re.compile(r"conv1\.weight"), "stem.conv1.weight"),
    (re.compile(r"bn1\.(weight|bias|running_mean|running_var)"), r"stem.conv1.norm.\1"),
    (re.compile(r"layer(\d)\.(\d+)\.conv(\d)\.weight"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (
        re.compile(r"layer(\d)\.(\d+)\.bn(\d)\.(weight|bias|running_mean|running_var)"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (re.compile(r"layer(\d)\.(\d+)\.downsample\.0\.weight"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (
        re.compile(r"layer(\d)\.(\d+)\.downsample\.1\.(weight|bias|running_mean|running_var)"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
]


def read_state_dict(path: str, fmt: str) -> Dict[str, torch.Tensor]:
    """The ResNet state dict in a torchvision or timm file.

    Accepts a bare state dict, a whole ``nn.Module``, and training checkpoints that wrap
    the weights as ``"model"`` / ``"state_dict"`` (torchvision references, timm train.py),
    with or without DistributedDataParallel's ``module.`` prefix.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    obj: Any = load_checkpoint_file(path)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), (dict, nn.Module)):
            obj = obj[key].state_dict() if isinstance(obj[key], nn.Module) else obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a {fmt} state dict (a mapping of names to tensors)")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def convert_resnet_state_dict(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchvision/timm ResNet state dict to Detectron2's ResNet names.

    Returns the converted dict and the source keys left out on purpose: the classifier
    (``fc.*``) and BatchNorm's ``num_batches_tracked`` counters, which nothing reads with
    a fixed momentum and which FrozenBN (the default norm) has no place for. Any other
    key that has no place in a Detectron2 ResNet raises, naming the keys.
    """
    converted, dropped, unknown = {}, [], []
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            dropped.append(key)
            continue
        for pattern, replacement in _RULES:
            if pattern.fullmatch(key):
                converted[pattern.sub(replacement, key)] = value.detach().clone()
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) have no place in a Detectron2 ResNet, e.g. {unknown[:6]}: only plain "
            "ResNet / ResNeXt / wide ResNet are convertible (not deep-stem 'd' variants, SE or anti-aliased "
            "blocks)"
        )
    return converted, dropped


def resnet_config(converted: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The Detectron2 config values (``{"MODEL.RESNETS.DEPTH": 50, ...}``) these weights need."""
    blocks = tuple(len({k.split(".")[1] for k in converted if k.startswith(f"res{stage}.")}) for stage in range(2, 6))
    bottleneck = "res2.0.conv3.weight" in converted
    if (blocks, bottleneck) not in _BLOCKS_TO_DEPTH:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"{blocks} {kind} blocks per stage is not a ResNet depth Detectron2 builds")
    last_conv = "res2.0.conv3.weight" if bottleneck else "res2.0.conv2.weight"
    values: Dict[str, Any] = {
        "MODEL.RESNETS.DEPTH": _BLOCKS_TO_DEPTH[(blocks, bottleneck)],
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": int(converted["stem.conv1.weight"].shape[0]),
        "MODEL.RESNETS.RES2_OUT_CHANNELS": int(converted[last_conv].shape[0]),
        "MODEL.RESNETS.NUM_GROUPS": 1,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
        "MODEL.PIXEL_MEAN": IMAGENET_PIXEL_MEAN,
        "MODEL.PIXEL_STD": IMAGENET_PIXEL_STD,
        "INPUT.FORMAT": "RGB",
    }
    if bottleneck:
        bottleneck_channels, per_group = converted["res2.0.conv2.weight"].shape[:2]
        groups = bottleneck_channels // per_group
        values["MODEL.RESNETS.NUM_GROUPS"] = int(groups)
        values["MODEL.RESNETS.WIDTH_PER_GROUP"] = int(bottleneck_channels // groups)
    return values


def build_resnet(config_values: Dict[str, Any], norm: str = "FrozenBN") -> nn.Module:
    """Detectron2's ResNet (all four stages out) for :func:`resnet_config`'s values."""
    cfg = get_cfg()
    cfg.merge_from_list([x for kv in config_values.items() for x in kv])
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))


def load_into(model: nn.Module, state_dict: Dict[str, Any]) -> LoadReport:
    """Load by exact name (no matching heuristics that could hide a wrong mapping)."""
    own = model.state_dict()
    tensors = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    wrong = sorted(k for k, v in tensors.items() if k in own and own[k].shape != v.shape)
    result = model.load_state_dict({k: v for k, v in tensors.items() if k not in wrong}, strict=False)
    missing = sorted(k for k in result.missing_keys if k not in wrong)
    return LoadReport(missing=missing, unexpected=sorted(result.unexpected_keys), wrong_shape=wrong)


def save_detectron2_checkpoint(converted: Dict[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model", "__author__", "matching_heuristics": True}`` as ``.pkl`` (numpy
    arrays, Detectron2's model-zoo form) or ``.pth`` (tensors)."""
    data: Dict[str, Any] = {"__author__": author, "matching_heuristics": True}
    if path.endswith(".pkl"):
        data["model"] = {k: v.numpy() for k, v in converted.items()}
        with atomic_write(path, "wb") as f:
            pickle.dump(data, f)
    elif path.endswith(".pth"):
        data["model"] = converted
        with atomic_write(path, "wb") as f:
            torch.save(data, f)
    else:
        raise ValueError(f"output {path!r} must end in .pkl or .pth")
