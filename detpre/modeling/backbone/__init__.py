"""Backbones registered in Detectron2's BACKBONE_REGISTRY."""

from .fusion import build_halfway_fusion_resnet_fpn_backbone  # noqa: F401
from .scratch_resnet_fpn import build_scratch_resnet_fpn_backbone  # noqa: F401
