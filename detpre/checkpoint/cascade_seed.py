"""Seed every stage of a Cascade R-CNN box head from a single-head (Mask R-CNN) checkpoint.

*Rethinking ImageNet Pre-training* trains a Mask R-CNN from scratch and switches it to
Cascade R-CNN for the last part of the schedule. The cascade's stages then start from the
trained single box head instead of from random weights. In Detectron2's names:

    roi_heads.box_head.<rest>                  -> roi_heads.box_head.{0,1,2}.<rest>
    roi_heads.box_predictor.cls_score.*        -> roi_heads.box_predictor.{0,1,2}.cls_score.*
    roi_heads.box_predictor.bbox_pred.*        -> roi_heads.box_predictor.{0,1,2}.bbox_pred.*
                                                  (made class-agnostic, rescaled per stage)

Two changes make the copied regressor predict the same boxes:

* Class-agnostic: Detectron2's cascade regresses one box per proposal while Mask R-CNN
  usually regresses one per class. The agnostic regressor is the mean of the per-class
  ones (weights and biases; the layer is linear, so its output is the mean of the
  per-class outputs). Without knowing the class at regression time this is the one linear
  regressor that treats classes alike, and it is exact for proposals on which the
  per-class regressors agree; training the cascade then adapts it.
* Regression weights: a predictor's raw outputs are deltas multiplied by its
  ``Box2BoxTransform`` weights (``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` (10, 10, 5, 5) for
  the single head; ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS`` (10, 10, 5, 5),
  (20, 20, 10, 10), (30, 30, 15, 15) for the stages). Scaling each output row by
  ``stage_weight / single_weight`` makes every stage decode the deltas the single head
  decoded.

:func:`seed_cascade_from_single_head` is a pure function on a state dict, used both when a
cascade model loads such a checkpoint (``detpre.modeling.roi_heads.SeededCascadeROIHeads``)
and offline by ``tools/convert_to_cascade.py``.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["SeedReport", "has_single_head", "seed_cascade_from_single_head"]

_HEADS = ("box_head", "box_predictor")
_SAME_HEAD_KEYS = "(MODEL.ROI_BOX_HEAD.*, MODEL.FPN.OUT_CHANNELS, MODEL.ROI_HEADS.NUM_CLASSES)"


def _split(key: str, prefix: str) -> Optional[Tuple[str, str]]:
    """``(head, rest)`` if ``key`` is ``<prefix><head>.<rest>`` for a box head/predictor."""
    if not key.startswith(prefix):
        return None
    head, _, rest = key[len(prefix) :].partition(".")
    return (head, rest) if head in _HEADS and rest else None


def _is_stage_key(rest: str) -> bool:
    return re.match(r"^\d+\.", rest) is not None


def has_single_head(state_dict: Mapping[str, object], prefix: str = "roi_heads.") -> bool:
    """Whether ``state_dict`` holds a single (non-cascade) box head under ``prefix``."""
    for key in state_dict:
        parts = _split(key, prefix)
        if parts is not None and not _is_stage_key(parts[1]):
            return True
    return False


@dataclass
class SeedReport:
    """What :func:`seed_cascade_from_single_head` did, key by key."""

    num_stages: int = 0
    #: single-head key -> how its value was turned into the stages' values
    seeded: Dict[str, str] = field(default_factory=dict)

    @property
    def num_keys_written(self) -> int:
        return self.num_stages * len(self.seeded)

    def format(self, prefix: str = "roi_heads.") -> str:
        if not self.seeded:
            return "No single-head box keys found: nothing seeded."
        stages = ",".join(str(i) for i in range(self.num_stages))
        lines = [
            f"Seeded {self.num_stages} cascade stages from the single box head "
            f"({len(self.seeded)} keys -> {self.num_keys_written}):"
        ]
        for key, how in self.seeded.items():
            head, rest = _split(key, prefix)
            lines.append(f"  {key} -> {prefix}{head}.{{{stages}}}.{rest}: {how}")
        return "\n".join(lines)


def _as_tensor(value: object, key: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(f"Checkpoint value of {key!r} is a {type(value).__name__}, not a tensor.")


def _agnostic_bbox_pred(
    tensor: torch.Tensor, key: str, box_dim: int, num_classes: Optional[int]
) -> Tuple[torch.Tensor, str]:
    """Average a class-specific bbox_pred weight ``(K*B, D)`` or bias ``(K*B,)`` over classes."""
    rows = tensor.shape[0]
    if rows == box_dim:
        return tensor, "class-agnostic already"
    if rows % box_dim != 0 or (num_classes is not None and rows != num_classes * box_dim):
        expected = f"{box_dim} or {num_classes} x {box_dim}" if num_classes else f"a multiple of {box_dim}"
        raise ValueError(
            f"{key} has {rows} output rows; expected {expected} (box_dim = "
            f"len(BBOX_REG_WEIGHTS) = {box_dim}, num_classes from cls_score)."
        )
    k = rows // box_dim
    # Detectron2 lays out class-specific deltas class-major: [c0: dx dy dw dh, c1: ...].
    averaged = tensor.reshape(k, box_dim, *tensor.shape[1:]).mean(dim=0)
    return averaged, f"class-specific ({k} classes) averaged to class-agnostic"


def seed_cascade_from_single_head(
    state_dict: Mapping[str, object],
    *,
    num_stages: int,
    single_reg_weights: Sequence[float],
    stage_reg_weights: Sequence[Sequence[float]],
    prefix: str = "roi_heads.",
    expected_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> Tuple[Dict[str, object], SeedReport]:
    """Return a copy of ``state_dict`` whose single box head seeds ``num_stages`` stages.

    Keys outside ``<prefix>box_head.`` / ``<prefix>box_predictor.`` are passed through
    untouched (the backbone, RPN, mask and keypoint heads are shared by both models).
    ``state_dict`` is not modified. Without a single head the copy is returned unchanged
    with an empty report.

    Args:
        num_stages: the cascade's number of stages.
        single_reg_weights: the single head's ``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS``.
        stage_reg_weights: ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS``, one per stage.
        prefix: where the box heads live ("roi_heads." in Detectron2's R-CNNs).
        expected_shapes: the cascade model's ``{key: shape}``; when given, every written key
            must exist in it with that shape (a clear error instead of a size mismatch deep
            in ``load_state_dict``, e.g. when the two configs' box heads differ).
    """
    if num_stages < 1 or len(stage_reg_weights) != num_stages:
        raise ValueError(
            f"num_stages ({num_stages}) must be >= 1 and match the {len(stage_reg_weights)} "
            "stage BBOX_REG_WEIGHTS (MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS)."
        )
    box_dim = len(single_reg_weights)
    if any(len(w) != box_dim for w in stage_reg_weights) or any(w == 0 for w in single_reg_weights):
        raise ValueError(
            f"BBOX_REG_WEIGHTS must all have {box_dim} entries and the single head's must be "
            f"non-zero: single {tuple(single_reg_weights)}, stages {[tuple(w) for w in stage_reg_weights]}."
        )

    out: Dict[str, object] = {}
    single: Dict[str, object] = {}
    stage_keys: List[str] = []
    for key, value in state_dict.items():
        parts = _split(key, prefix)
        if parts is None:
            out[key] = value
        elif _is_stage_key(parts[1]):
            stage_keys.append(key)
            out[key] = value
        else:
            single[key] = value
    report = SeedReport()
    if not single:
        return out, report
    if stage_keys:
        raise ValueError(
            f"The checkpoint holds both a single box head ({next(iter(single))}) and cascade "
            f"stages ({stage_keys[0]}): cannot tell which should initialize the cascade."
        )

    cls_key = f"{prefix}box_predictor.cls_score.weight"
    num_classes = _as_tensor(single[cls_key], cls_key).shape[0] - 1 if cls_key in single else None
    report.num_stages = num_stages
    for key, value in single.items():
        head, rest = _split(key, prefix)
        tensor = _as_tensor(value, key)
        if head == "box_predictor" and rest in ("bbox_pred.weight", "bbox_pred.bias"):
            base, how = _agnostic_bbox_pred(tensor, key, box_dim, num_classes)
            ratios = [
                torch.tensor([s / w for s, w in zip(stage, single_reg_weights)], dtype=base.dtype)
                for stage in stage_reg_weights
            ]
            values = [base * (r if base.dim() == 1 else r[:, None]) for r in ratios]
            scales = ", ".join(str(tuple(round(float(x), 4) for x in r)) for r in ratios)
            how = f"{how}; rows scaled per stage by {scales}"
        else:
            values = [tensor.clone() for _ in range(num_stages)]
            how = "copied"
        for stage, v in enumerate(values):
            target = f"{prefix}{head}.{stage}.{rest}"
            if expected_shapes is not None:
                if target not in expected_shapes:
                    raise ValueError(
                        f"Seeding {target} from {key}: the cascade model has no such key; the "
                        f"single-head and cascade configs must build the same box head {_SAME_HEAD_KEYS}."
                    )
                if tuple(v.shape) != tuple(expected_shapes[target]):
                    raise ValueError(
                        f"Seeding {target} from {key}: shape {tuple(v.shape)} does not match "
                        f"the cascade model's {tuple(expected_shapes[target])}; the single-head "
                        f"and cascade configs must build the same box head {_SAME_HEAD_KEYS}."
                    )
            out[target] = v
        report.seeded[key] = how
    return out, report
