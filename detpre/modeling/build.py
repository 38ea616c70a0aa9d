"""detpre's ``build_model`` and ``build_backbone``: Detectron2's, on a config whose norms are
resolved for this process (:func:`detpre.layers.resolve_norms`: SyncBN in one or several CPU
processes, norms of detpre's registry). Everything detpre builds a model with goes through
here: the trainer, the conversion tools, the analysis tools."""

from typing import Optional

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling import build_backbone as detectron2_build_backbone
from detectron2.modeling import build_model as detectron2_build_model
from torch import nn

from ..layers.norm import resolve_norms

__all__ = ["build_backbone", "build_model"]


def build_model(cfg: CfgNode, world_size: int = -1) -> nn.Module:
    """The model of ``cfg`` (Detectron2's ``build_model``), its norms resolved."""
    return detectron2_build_model(resolve_norms(cfg, world_size))


def build_backbone(cfg: CfgNode, input_shape: Optional[ShapeSpec] = None, world_size: int = -1) -> Backbone:
    """The backbone of ``cfg`` (Detectron2's ``build_backbone``), its norms resolved."""
    return detectron2_build_backbone(resolve_norms(cfg, world_size), input_shape)
