"""Weights from a checkpoint of either pre-training meta-architecture, and the config key they
go into.

A checkpoint is told apart by its keys: ``ImageDomainPretrainer`` (``encoder_q.*``: backbone
weights) or ``BoxDomainPretrainer`` (``online.*``: the whole detector).
``tools/convert_pretrained.py`` converts both through :func:`convert_pretrained`, and the
init study (:mod:`detpre.analysis.init_study`) hands each converted stage to the next through
:func:`input_weights_key`."""

from typing import Dict, Mapping, Optional, Tuple

import torch
from detectron2.config import CfgNode

from .box_domain_weights import BOX_DOMAIN_WEIGHTS_KEY, ONLINE_PREFIX, ConversionReport, box_domain_to_detector
from .image_domain_weights import QUERY_BACKBONE_PREFIX, image_domain_to_backbone, is_image_domain_state

__all__ = ["PRETRAINERS", "convert_pretrained", "input_weights_key", "pretrainer_of"]

#: The pre-training meta-architectures whose checkpoints convert.
PRETRAINERS = ("ImageDomainPretrainer", "BoxDomainPretrainer")


def pretrainer_of(state_dict: Mapping[str, object]) -> str:
    """The meta-architecture that wrote ``state_dict`` (one of :data:`PRETRAINERS`)."""
    if is_image_domain_state(state_dict):
        return "ImageDomainPretrainer"
    if any(k.startswith(ONLINE_PREFIX) for k in state_dict):
        return "BoxDomainPretrainer"
    raise ValueError(
        f"Not a pre-training checkpoint: neither ImageDomainPretrainer's '{QUERY_BACKBONE_PREFIX}*' keys nor "
        f"BoxDomainPretrainer's '{ONLINE_PREFIX}*' keys (it has e.g. {sorted(state_dict)[:3]})."
    )


def convert_pretrained(
    state_dict: Mapping[str, torch.Tensor],
    target: Optional[Mapping[str, torch.Tensor]] = None,
    keep_heads: bool = False,
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """The weights of a pre-training checkpoint under the names of the model they are for
    (``target``, that model's state dict, to check shapes against), and the report.

    ``keep_heads`` keeps a box-domain detector's final regression layers; an image-domain
    checkpoint holds a backbone only, so it is an error there."""
    if pretrainer_of(state_dict) == "BoxDomainPretrainer":
        return box_domain_to_detector(state_dict, target, keep_heads=keep_heads)
    if keep_heads:
        raise ValueError("keep_heads (--keep-heads) is for box-domain checkpoints; an image-domain one has no heads.")
    return image_domain_to_backbone(state_dict, target)


def input_weights_key(cfg: CfgNode) -> str:
    """The key through which a config's model takes its starting weights.

    A box-domain pre-training wraps a detector whose image-domain weights are
    ``MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS`` (its ``MODEL.WEIGHTS`` is for box-domain checkpoints
    of the wrapper); every other model, image-domain pre-training included, takes ``MODEL.WEIGHTS``.
    """
    return BOX_DOMAIN_WEIGHTS_KEY if cfg.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer" else "MODEL.WEIGHTS"
