"""ResNet/ResNeXt-FPN for training from random initialization.

*Rethinking ImageNet Pre-training* (He, Girshick, Dollar) trains standard detectors from
scratch with two requirements: a normalization that is trained (GN or SyncBN) in every
layer — frozen BN has nothing to freeze without pre-training — and every layer trainable.
Detectron2's ``build_resnet_fpn_backbone`` builds the network; this builder adds what a
from-scratch run needs around it:

* a refusal, naming the key, of settings that would freeze randomly initialized layers or
  leave a layer unnormalized: ``MODEL.BACKBONE.FREEZE_AT`` > 0, ``FrozenBN`` or no norm;
* optional zero-init of each residual block's last norm (``MODEL.RESNETS.ZERO_INIT_LAST_NORM``).

Weights start as in Detectron (the codebase of the paper): He ("MSRA") init for the ResNet
convolutions, Caffe2's Xavier fill for the FPN convolutions, norm scales at 1 and shifts at 0.
The stem takes ``len(MODEL.PIXEL_MEAN)`` input channels (Detectron2's ``build_backbone``
passes them), so 4- or 6-channel inputs (e.g. RGB + thermal) need no change here.
"""

import logging
import re

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import Backbone, ResNet
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["build_scratch_resnet_fpn_backbone", "check_scratch_trainable", "zero_init_last_norms"]

_CONV_NAME = re.compile(r"^conv(\d+)$")


def check_scratch_trainable(cfg: CfgNode) -> None:
    """Raise ``ValueError`` unless every backbone layer is normalized and trainable.

    Refused rather than silently changed: a config that asks to freeze layers was written
    for fine-tuning, and training it from scratch "fixed" would not be the run its author
    meant. The message says which key to change.
    """
    if cfg.MODEL.BACKBONE.FREEZE_AT != 0:
        raise ValueError(
            f"MODEL.BACKBONE.FREEZE_AT is {cfg.MODEL.BACKBONE.FREEZE_AT}, but "
            f"{cfg.MODEL.BACKBONE.NAME} trains every layer (layers trained from scratch "
            "cannot be frozen at their random init); set MODEL.BACKBONE.FREEZE_AT 0."
        )
    for key in ("RESNETS", "FPN"):
        norm = cfg.MODEL[key].NORM
        if norm == "FrozenBN":
            raise ValueError(
                f"MODEL.{key}.NORM is 'FrozenBN', which has no statistics to freeze when "
                "training from scratch; use 'GN' or 'SyncBN' (Rethinking ImageNet Pre-training, "
                "Sec. 3)."
            )
        if not norm:
            raise ValueError(
                f"MODEL.{key}.NORM is empty: {cfg.MODEL.BACKBONE.NAME} normalizes every layer, "
                "without which deep detectors do not train from scratch; use 'GN' or 'SyncBN'."
            )


def _last_conv(block: nn.Module) -> nn.Module:
    """The last convolution of a residual branch: the highest-numbered ``convN`` child.

    Detectron2's ``BasicBlock`` ends in ``conv2``, ``BottleneckBlock`` and
    ``DeformBottleneckBlock`` in ``conv3``; the ``shortcut`` is not part of the branch.
    """
    convs = {
        int(m.group(1)): child for name, child in block.named_children() if (m := _CONV_NAME.match(name)) is not None
    }
    if not convs:
        raise TypeError(f"{type(block).__name__} has no convN layers: cannot find its last norm.")
    return convs[max(convs)]


def zero_init_last_norms(resnet: ResNet) -> int:
    """Set the scale of each residual block's last norm to 0; return how many were set.

    Every block then starts as the identity (plus ReLU), as in Goyal et al., "Accurate,
    Large Minibatch SGD" Sec. 5.1, which can ease the first iterations from scratch.
    Detectron2 leaves it off because it hurt GN models trained from scratch in their runs,
    so it is an option (``MODEL.RESNETS.ZERO_INIT_LAST_NORM``), off by default.
    """
    count = 0
    for stage in resnet.stages:
        for block in stage:
            norm = getattr(_last_conv(block), "norm", None)
            if norm is None or getattr(norm, "weight", None) is None:
                raise TypeError(
                    f"{type(block).__name__}'s last convolution has no affine norm "
                    f"({type(norm).__name__}) to zero-initialize."
                )
            nn.init.zeros_(norm.weight)
            count += 1
    return count


@BACKBONE_REGISTRY.register()
def build_scratch_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """Detectron2's ResNet-FPN (same modules, same parameter names) made for scratch training.

    Reads the same keys as ``build_resnet_fpn_backbone`` plus
    ``MODEL.RESNETS.ZERO_INIT_LAST_NORM``; see the module docstring.
    """
    check_scratch_trainable(cfg)
    backbone = build_resnet_fpn_backbone(cfg, input_shape)
    if cfg.MODEL.RESNETS.ZERO_INIT_LAST_NORM:
        count = zero_init_last_norms(backbone.bottom_up)
        logger.info("Zero-initialized the last norm of %d residual blocks.", count)
    return backbone
