"""Visible + thermal fusion backbones for KAIST.

*Early fusion* needs no module of its own: the multispectral mapper stacks the frames into
one 4- or 6-channel image, Detectron2's ``build_backbone`` sizes the stem from
``len(MODEL.PIXEL_MEAN)``, and :class:`detpre.checkpoint.DetpreCheckpointer` inflates the
3-channel stem of ImageNet/COCO weights. Any ResNet-FPN builder works as is
(``build_resnet_fpn_backbone``, ``build_scratch_resnet_fpn_backbone``).

*Halfway fusion* (Liu et al., BMVC 2016; Konig et al., CVPRW 2017) runs one ResNet per
modality up to a stage, concatenates the two feature maps and merges them with a 1x1 conv
(+ norm + ReLU) back to one stream's width; the remaining stages, the FPN and the heads are
shared. Each stream is a Detectron2 ``ResNet`` built by ``build_resnet_backbone``, so its
parameters keep Detectron2's names and load any Detectron2/ImageNet ResNet checkpoint
(``MODEL.FUSION.VISIBLE_WEIGHTS`` / ``THERMAL_WEIGHTS``).
"""

import copy
import logging
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, Backbone, ResNet, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from ...checkpoint import DetpreCheckpointer
from ...data.multispectral import LWIR, VISIBLE, MultispectralFormat
from ...layers.norm import get_norm
from .scratch_resnet_fpn import zero_init_last_norms

logger = logging.getLogger(__name__)

__all__ = ["HalfwayFusionResNet", "build_halfway_fusion_resnet_fpn_backbone", "load_stream_weights"]

_STAGES = ("res2", "res3", "res4", "res5")


class HalfwayFusionResNet(Backbone):
    """Two ResNet streams (visible, thermal) fused after ``fusion_stage``.

    ``visible`` is a whole ResNet whose stages after the fusion stage are the shared trunk;
    ``thermal`` stops at the fusion stage. Every stage up to the fusion stage that is an
    output feature (for the FPN) is fused by its own 1x1 conv, so the FPN sees both
    modalities at every level.
    """

    def __init__(
        self,
        visible: ResNet,
        thermal: ResNet,
        fusion_stage: str,
        visible_channels: int,
        out_features,
        norm: str = "",
    ):
        super().__init__()
        if fusion_stage not in visible.stage_names or fusion_stage != thermal.stage_names[-1]:
            raise ValueError(
                f"MODEL.FUSION.STAGE {fusion_stage!r} must be the thermal stream's last stage "
                f"({thermal.stage_names[-1]!r}) and one of the visible stream's {visible.stage_names}."
            )
        self.visible = visible
        self.thermal = thermal
        self.fusion_stage = fusion_stage
        self.visible_channels = visible_channels
        self._out_features = list(out_features)
        fused = visible.stage_names[: visible.stage_names.index(fusion_stage) + 1]
        self.fused_stages = tuple(s for s in fused if s in self._out_features or s == fusion_stage)
        visible_stages = dict(zip(visible.stage_names, visible.stages))
        thermal_stages = dict(zip(thermal.stage_names, thermal.stages))
        self.fuse = nn.ModuleDict()
        for stage in self.fused_stages:
            channels = visible_stages[stage][-1].out_channels
            conv = Conv2d(
                channels + thermal_stages[stage][-1].out_channels,
                channels,
                kernel_size=1,
                bias=not norm,
                norm=get_norm(norm, channels),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            self.fuse[stage] = conv
        visible_shapes = visible.output_shape()
        self._out_feature_strides = {f: visible_shapes[f].stride for f in self._out_features}
        self._out_feature_channels = {f: visible_shapes[f].channels for f in self._out_features}

    def forward(self, x: torch.Tensor, modality: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """The fused features of ``x`` (visible channels first, then thermal).

        With ``modality`` ("visible" or "lwir"), only that frame's stream runs and the other
        stream's features are zeros where the streams are fused: one frame seen alone, as
        image-domain cross-modal pre-training shows them (its channels of the other modality
        in ``x`` are not read). The shared trunk after the fusion stage runs either way.
        """
        if modality not in (None, VISIBLE, LWIR):
            raise ValueError(f"HalfwayFusionResNet: modality {modality!r} is not None, {VISIBLE!r} or {LWIR!r}.")
        v = self.visible.stem(x[:, : self.visible_channels]) if modality != LWIR else None
        t = self.thermal.stem(x[:, self.visible_channels :]) if modality != VISIBLE else None
        thermal_stages = dict(zip(self.thermal.stage_names, self.thermal.stages))
        outputs = {}
        for name, stage in zip(self.visible.stage_names, self.visible.stages):
            if name in thermal_stages:  # up to the fusion stage: the streams run apart
                v = stage(v) if v is not None else None
                t = thermal_stages[name](t) if t is not None else None
                feature = v
                if name in self.fuse:
                    feature = self.fuse[name](self._both(name, v, t))
                    if name == self.fusion_stage:
                        v = feature  # from here on, one shared stream
            else:
                v = stage(v)
                feature = v
            if name in self._out_features:
                outputs[name] = feature
        return outputs

    def _both(self, stage: str, v: Optional[torch.Tensor], t: Optional[torch.Tensor]) -> torch.Tensor:
        """The input of a fusion conv: both streams' maps, zeros for a stream that did not run."""
        conv = self.fuse[stage]
        visible_channels = conv.out_channels  # the fusion conv maps back to the visible width
        if v is None:
            v = t.new_zeros((t.shape[0], visible_channels, *t.shape[2:]))
        if t is None:
            t = v.new_zeros((v.shape[0], conv.in_channels - visible_channels, *v.shape[2:]))
        return torch.cat([v, t], dim=1)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }


class _StreamCheckpointer(DetpreCheckpointer):
    """Loads a ResNet or a whole Detectron2 detector's backbone into one stream."""

    PREFIXES = ("backbone.bottom_up.", "backbone.")

    def _load_model(self, checkpoint):
        weights = checkpoint["model"]
        for prefix in self.PREFIXES:
            if any(k.startswith(prefix) for k in weights):
                checkpoint["model"] = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
                break
        return super()._load_model(checkpoint)


def load_stream_weights(stream: ResNet, path: str, name: str) -> None:
    """Initialize one stream from ``path`` (stem inflated to the stream's input channels)."""
    logger.info("Loading the %s stream of the halfway-fusion backbone from %s", name, path)
    _StreamCheckpointer(stream).load(path, checkpointables=[])


def _stream_cfg(cfg: CfgNode, last_stage: str) -> CfgNode:
    """The config of a stream that stops at ``last_stage``."""
    stream = copy.deepcopy(cfg)
    stream.defrost()
    stream.MODEL.RESNETS.OUT_FEATURES = list(_STAGES[: _STAGES.index(last_stage) + 1])
    return stream


@BACKBONE_REGISTRY.register()
def build_halfway_fusion_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """Halfway-fusion ResNet-FPN: reads ``MODEL.RESNETS``, ``MODEL.FPN`` and ``MODEL.FUSION``.

    The input channels are split by ``INPUT.FORMAT`` (e.g. ``BGRT``: 3 visible + 1 thermal).
    """
    fmt = MultispectralFormat.parse(cfg.INPUT.FORMAT)
    if not fmt.visible or not fmt.thermal_channels:
        raise ValueError(f"Halfway fusion needs visible and thermal channels; INPUT.FORMAT is {cfg.INPUT.FORMAT!r}.")
    if input_shape.channels != fmt.channels:
        raise ValueError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} has {fmt.channels} channels but the model input has "
            f"{input_shape.channels} (len(MODEL.PIXEL_MEAN))."
        )
    stage = cfg.MODEL.FUSION.STAGE
    if stage not in _STAGES:
        raise ValueError(f"MODEL.FUSION.STAGE {stage!r} is not one of {_STAGES}.")
    out_features = cfg.MODEL.RESNETS.OUT_FEATURES
    visible = build_resnet_backbone(cfg, ShapeSpec(channels=fmt.visible_channels))
    thermal = build_resnet_backbone(_stream_cfg(cfg, stage), ShapeSpec(channels=fmt.thermal_channels))
    if cfg.MODEL.RESNETS.ZERO_INIT_LAST_NORM:
        zero_init_last_norms(visible)
        zero_init_last_norms(thermal)
    for stream, path, name in (
        (visible, cfg.MODEL.FUSION.VISIBLE_WEIGHTS, "visible"),
        (thermal, cfg.MODEL.FUSION.THERMAL_WEIGHTS, "thermal"),
    ):
        if path:
            load_stream_weights(stream, path, name)
    bottom_up = HalfwayFusionResNet(
        visible, thermal, stage, fmt.visible_channels, out_features, norm=cfg.MODEL.RESNETS.NORM
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
