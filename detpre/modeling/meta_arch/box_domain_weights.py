"""Fine-tuning weights from a ``BoxDomainPretrainer`` checkpoint.

What AlignDet carries over to fine-tuning (``tools/model_converters/extract_detector_weights.py``)
is the *online* detector without its last layers: backbone (the image-domain weights it
started from, unchanged when frozen), FPN, the whole RPN, the box heads' shared convs / fcs
and RetinaNet's subnets. Dropped: the momentum branch and the projections (they only served
the contrastive loss), and, unless ``keep_heads`` (AlignDet's ``--keep-heads``), the final
regression layers (:data:`FINAL_REGRESSION_LAYERS`: ``fc_reg`` / ``retina_reg`` there,
``bbox_pred`` here, every cascade stage's). Re-initialised (left out, so the fine-tuning
model keeps its own initialisation, e.g. RetinaNet's prior-probability bias): the
classifiers and mask / keypoint heads, which pre-training never trained
(:data:`UNTRAINED_PARAMETERS`).

Given the fine-tuning model's state dict, a kept tensor whose shape differs there (e.g. a
class-agnostic ``bbox_pred`` of 4 outputs for a detector regressing 4 x K) is re-initialised
too, and every parameter of the model that the weights do not provide is reported. Norm
layers that only the fine-tuning model has (AlignDet fine-tunes with SyncBN in the FPN,
whose convs then have no bias: those pre-trained biases are dropped, as in AlignDet) and BN
counters (``num_batches_tracked``, absent from FrozenBN; torch starts them at 0 on loading)
are expected, not mismatches: the counters are not reported at all.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .box_domain_heads import is_untrained

__all__ = ["FINAL_REGRESSION_LAYERS", "ConversionReport", "box_domain_to_detector"]

ONLINE_PREFIX = "online."
#: The config key of the image-domain weights the wrapped detector starts from (its
#: ``MODEL.WEIGHTS`` is for box-domain checkpoints of the wrapper).
BOX_DOMAIN_WEIGHTS_KEY = "MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS"


#: The last regression layers of the detector's box branches (ROI predictors of every stage,
#: RetinaNet's box subnet output), which AlignDet's extraction drops unless --keep-heads.
FINAL_REGRESSION_LAYERS = (
    re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.bbox_pred\."),
    re.compile(r"^head\.bbox_pred\."),
)
#: Norm layers: Detectron2 names a conv's norm ``<conv>.norm``.
_NORM = re.compile(r"\.norm\.")

#: Why a tensor is re-initialised when pre-training was never meant to train it.
UNTRAINED = "not trained by box-domain pre-training"
#: ... when it is a final regression layer left out as AlignDet does.
FINAL_LAYER = "final regression layer, left out as AlignDet's extraction does (--keep-heads keeps it)"
#: ... when it is a norm layer that only the fine-tuning model has.
FINE_TUNING_NORM = "norm layer of the fine-tuning model only (AlignDet fine-tunes with SyncBN)"
#: Reasons that do not mean the two configs describe different models.
EXPECTED = (UNTRAINED, FINAL_LAYER, FINE_TUNING_NORM)


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
        return {k: why for k, why in self.reinitialized.items() if why not in EXPECTED}

    def place(
        self,
        weights: Dict[str, torch.Tensor],
        key: str,
        name: str,
        value: torch.Tensor,
        target: Optional[Mapping[str, torch.Tensor]],
    ) -> None:
        """Put checkpoint tensor ``key`` into ``weights`` as ``name``, unless the fine-tuning
        model (``target``, when given) has no such tensor (dropped) or one of another shape
        (re-initialised, with both shapes)."""
        if target is not None and name not in target:
            self.dropped.append(key)
        elif target is not None and tuple(target[name].shape) != tuple(value.shape):
            self.reinitialized[name] = (
                f"shape {tuple(value.shape)} in pre-training, {tuple(target[name].shape)} in the fine-tuning model"
            )
        else:
            weights[name] = value
            self.kept.append(name)

    def summary(self) -> str:
        lines = [
            f"kept {len(self.kept)} tensors of the online detector",
            f"dropped {len(self.dropped)} pre-training-only tensors (momentum branch, projections, step count)",
            f"re-initialised {len(self.reinitialized)} tensors:",
        ]
        lines += [f"  {key}: {reason}" for key, reason in sorted(self.reinitialized.items())]
        return "\n".join(lines)


def box_domain_to_detector(
    state_dict: Mapping[str, torch.Tensor],
    target: Optional[Mapping[str, torch.Tensor]] = None,
    keep_heads: bool = False,
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """The plain detector's weights in a ``BoxDomainPretrainer`` state dict.

    Args:
        state_dict: the pre-training model's state dict (``checkpoint["model"]``).
        target: optionally the fine-tuning model's state dict, to check shapes against and
            report what it will initialise itself.
        keep_heads: keep the final regression layers (:data:`FINAL_REGRESSION_LAYERS`).
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
        elif not keep_heads and is_final_regression(name):
            report.reinitialized[name] = FINAL_LAYER
        else:
            report.place(weights, key, name, value, target)
    if target is not None:
        for name in target:
            if name not in weights and name not in report.reinitialized and not name.endswith("num_batches_tracked"):
                report.reinitialized[name] = _why_absent(name, keep_heads)
    return weights, report


def is_final_regression(name: str) -> bool:
    """Whether detector parameter ``name`` is one of :data:`FINAL_REGRESSION_LAYERS`."""
    return any(p.search(name) for p in FINAL_REGRESSION_LAYERS)


def _why_absent(name: str, keep_heads: bool) -> str:
    """Why a tensor of the fine-tuning model is not in the converted weights."""
    if is_untrained(name):
        return UNTRAINED
    if not keep_heads and is_final_regression(name):
        return FINAL_LAYER
    if _NORM.search(name):
        return FINE_TUNING_NORM
    return "absent from the pre-trained detector"
