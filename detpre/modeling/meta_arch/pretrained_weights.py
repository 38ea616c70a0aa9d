"""Fine-tuning weights from a checkpoint of either pre-training meta-architecture, told apart
by its keys: ``ImageDomainPretrainer`` (``encoder_q.*``: backbone weights) and
``BoxDomainPretrainer`` (``online.*``: the whole detector). ``tools/convert_pretrained.py``
converts both through here."""

from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

from .box_domain_weights import ONLINE_PREFIX, ConversionReport, box_domain_to_detector
from .image_domain_weights import QUERY_BACKBONE_PREFIX, image_domain_to_backbone, is_image_domain_state

__all__ = ["CONVERTERS", "pretrainer_of"]

Converter = Callable[
    [Mapping[str, torch.Tensor], Optional[Mapping[str, torch.Tensor]]],
    Tuple[Dict[str, torch.Tensor], ConversionReport],
]
#: The conversion of each pre-training meta-architecture's checkpoints.
CONVERTERS: Dict[str, Converter] = {
    "ImageDomainPretrainer": image_domain_to_backbone,
    "BoxDomainPretrainer": box_domain_to_detector,
}


def pretrainer_of(state_dict: Mapping[str, object]) -> str:
    """The meta-architecture that wrote ``state_dict`` (a key of :data:`CONVERTERS`)."""
    if is_image_domain_state(state_dict):
        return "ImageDomainPretrainer"
    if any(k.startswith(ONLINE_PREFIX) for k in state_dict):
        return "BoxDomainPretrainer"
    raise ValueError(
        f"Not a pre-training checkpoint: neither ImageDomainPretrainer's '{QUERY_BACKBONE_PREFIX}*' keys nor "
        f"BoxDomainPretrainer's '{ONLINE_PREFIX}*' keys (it has e.g. {sorted(state_dict)[:3]})."
    )
