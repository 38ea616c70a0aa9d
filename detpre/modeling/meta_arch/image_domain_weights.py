"""Backbone weights from an ``ImageDomainPretrainer`` checkpoint.

What image-domain pre-training leaves for a detector is the *query* encoder's network (MoCo
and DenseCL transfer it too: their ``extract_backbone_weights`` / ``convert-pretrain-to-detectron2``
keep ``encoder_q``'s backbone). Its keys are already the detector's (``encoder_q.backbone.
bottom_up.res2...`` is ``backbone.bottom_up.res2...`` of an FPN detector), so the conversion
drops a prefix, without Detectron2's suffix-matching heuristics. Dropped: the key encoder,
the projection heads, the queues, the step count. Everything else of a detector (FPN, RPN,
heads) was never pre-trained and keeps the fine-tuning model's initialization.

The result loads through ``MODEL.WEIGHTS`` of any detector with this backbone, and as the
image-domain stage of box-domain pre-training (``MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS``).
"""

from collections import Counter
from typing import Dict, Mapping, Optional, Tuple

import torch

from .box_domain_weights import ConversionReport

__all__ = ["ImageDomainConversionReport", "image_domain_to_backbone", "is_image_domain_state"]

QUERY_PREFIX = "encoder_q."
QUERY_BACKBONE_PREFIX = QUERY_PREFIX + "backbone."
#: Where a backbone's network sits in a detector: under an FPN, else the backbone itself.
NETWORK_PREFIXES = ("backbone.bottom_up.", "backbone.")

#: Why a tensor of the fine-tuning model keeps its own initialization although nothing is wrong.
NOT_PRETRAINED = "outside the pre-trained backbone network"


def is_image_domain_state(state_dict: Mapping[str, object]) -> bool:
    return any(k.startswith(QUERY_BACKBONE_PREFIX) for k in state_dict)


class ImageDomainConversionReport(ConversionReport):
    """Kept backbone tensors, dropped pre-training-only tensors, and the fine-tuning model's
    tensors left at their initialization (the FPN and heads; and, with a reason, backbone
    tensors the checkpoint does not fit)."""

    @property
    def mismatched(self) -> Dict[str, str]:
        """Backbone tensors of the fine-tuning model the checkpoint should have filled but did
        not (absent, another shape): the two configs describe different backbones."""
        return {k: why for k, why in self.reinitialized.items() if why != NOT_PRETRAINED}

    def summary(self) -> str:
        outside = Counter(k.split(".")[0] for k, why in self.reinitialized.items() if why == NOT_PRETRAINED)
        lines = [
            f"kept {len(self.kept)} backbone tensors of the query encoder",
            f"dropped {len(self.dropped)} pre-training-only tensors (key encoder, projection heads, queues, "
            "step count)",
        ]
        if outside:
            parts = ", ".join(f"{name} {count}" for name, count in sorted(outside.items()))
            lines.append(f"left to the fine-tuning model's initialization ({NOT_PRETRAINED}): {parts}")
        if self.mismatched:
            lines.append(f"backbone tensors the checkpoint does not fill ({len(self.mismatched)}):")
            lines += [f"  {key}: {reason}" for key, reason in sorted(self.mismatched.items())]
        return "\n".join(lines)


def _network_prefix(keys, default: str) -> str:
    """The prefix under which ``keys`` hold a backbone network (an FPN's bottom-up, or not)."""
    return next((p for p in NETWORK_PREFIXES if any(k.startswith(p) for k in keys)), default)


def image_domain_to_backbone(
    state_dict: Mapping[str, torch.Tensor], target: Optional[Mapping[str, torch.Tensor]] = None
) -> Tuple[Dict[str, torch.Tensor], ImageDomainConversionReport]:
    """The detector-backbone weights in an ``ImageDomainPretrainer`` state dict.

    Args:
        state_dict: the pre-training model's state dict (``checkpoint["model"]``).
        target: optionally the fine-tuning model's state dict, to check shapes against and
            report what it will initialise itself. Its backbone may nest the network
            differently (a C4 detector's ``backbone.*`` for an FPN's ``backbone.bottom_up.*``):
            keys are moved to where the target has its network.
    """
    if not is_image_domain_state(state_dict):
        raise ValueError(
            f"Not an ImageDomainPretrainer checkpoint: no '{QUERY_BACKBONE_PREFIX}*' keys "
            f"(it has e.g. {sorted(state_dict)[:3]})."
        )
    network = [k[len(QUERY_PREFIX) :] for k in state_dict if k.startswith(QUERY_BACKBONE_PREFIX)]
    source = _network_prefix(network, "backbone.")
    destination = source if target is None else _network_prefix(target, source)
    report = ImageDomainConversionReport()
    weights: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(QUERY_BACKBONE_PREFIX):
            report.dropped.append(key)
            continue
        report.place(weights, key, destination + key[len(QUERY_PREFIX) + len(source) :], value, target)
    for name in target or ():
        if name not in weights and name not in report.reinitialized:
            inside = name.startswith(destination)
            report.reinitialized[name] = "absent from the image-domain checkpoint" if inside else NOT_PRETRAINED
    return weights, report
