"""Fine-tuning weights from a ``BoxDomainPretrainer`` checkpoint.

What AlignDet carries over to fine-tuning is the *online* detector: backbone (the
image-domain weights it started from, unchanged when frozen), FPN, RPN, box heads and
their box regression. Dropped: the momentum branch and the projections (they only served
the contrastive loss); re-initialised (left out, so the fine-tuning model keeps its own
initialisation, e.g. RetinaNet's prior-probability bias): the classifiers and mask /
keypoint heads, which pre-training never trained (:data:`UNTRAINED_PARAMETERS`).

Given the fine-tuning model's state dict, a kept tensor whose shape differs there (e.g. a
class-agnostic ``bbox_pred`` of 4 outputs for a detector regressing 4 x K) is re-initialised
too, and every parameter of the model that the weights do not provide is reported.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .box_domain_heads import is_untrained

__all__ = ["ConversionReport", "box_domain_to_detector"]

ONLINE_PREFIX = "online."
#: The config key of the image-domain weights the wrapped detector starts from (its
#: ``MODEL.WEIGHTS`` is for box-domain checkpoints of the wrapper).
BOX_DOMAIN_WEIGHTS_KEY = "MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS"


#: Why a tensor is re-initialised when pre-training was never meant to train it.
UNTRAINED = "not trained by box-domain pre-training"


@dataclass
class ConversionReport:
    """Which keys were kept, dropped (pre-training only) and re-initialised (and why)."""

    kept: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    reinitialized: Dict[str, str] = field(default_factory=dict)  # key -> reason

    @property
    def mismatched(self) -> Dict[str, str]:
        """Re-initialised tensors pre-training did train, or should have had: a shape that
        differs, or a tensor the pre-trained detector lacks. Many of them mean the pre-training
        and fine-tuning configs describe different models."""
        return {k: why for k, why in self.reinitialized.items() if why != UNTRAINED}

    def summary(self) -> str:
        lines = [
            f"kept {len(self.kept)} tensors of the online detector",
            f"dropped {len(self.dropped)} pre-training-only tensors (momentum branch, projections, step count)",
            f"re-initialised {len(self.reinitialized)} tensors:",
        ]
        lines += [f"  {key}: {reason}" for key, reason in sorted(self.reinitialized.items())]
        return "\n".join(lines)


def box_domain_to_detector(
    state_dict: Mapping[str, torch.Tensor], target: Optional[Mapping[str, torch.Tensor]] = None
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """The plain detector's weights in a ``BoxDomainPretrainer`` state dict.

    Args:
        state_dict: the pre-training model's state dict (``checkpoint["model"]``).
        target: optionally the fine-tuning model's state dict, to check shapes against and
            report what it will initialise itself.
    """
    if not any(k.startswith(ONLINE_PREFIX) for k in state_dict):
        raise ValueError(
            f"Not a BoxDomainPretrainer checkpoint: no 'online.*' keys (it has e.g. {sorted(state_dict)[:3]})."
        )
    report = ConversionReport()
    weights: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(ONLINE_PREFIX):
            report.dropped.append(key)
            continue
        name = key[len(ONLINE_PREFIX) :]
        if is_untrained(name):
            report.reinitialized[name] = UNTRAINED
        elif target is not None and name not in target:
            report.dropped.append(key)
        elif target is not None and tuple(target[name].shape) != tuple(value.shape):
            report.reinitialized[name] = (
                f"shape {tuple(value.shape)} in pre-training, {tuple(target[name].shape)} in the fine-tuning model"
            )
        else:
            weights[name] = value
            report.kept.append(name)
    if target is not None:
        for name in target:
            if name not in weights and name not in report.reinitialized:
                report.reinitialized[name] = UNTRAINED if is_untrained(name) else "absent from the pre-trained detector"
    return weights, report
