"""Cascade R-CNN heads that can start from a trained single-head (Mask R-CNN) model.

Detectron2's ``CascadeROIHeads`` already builds what *Rethinking ImageNet Pre-training*
uses: one box head per stage (GN 4conv1fc through ``MODEL.ROI_BOX_HEAD``), IoUs
(0.5, 0.6, 0.7), class-agnostic regression, and the mask head applied to the last stage's
boxes. What it cannot do is continue from a Mask R-CNN checkpoint, as the paper does when it
switches to Cascade R-CNN for the final part of a schedule: the checkpoint's
``roi_heads.box_head.*`` / ``roi_heads.box_predictor.*`` do not match the cascade's
``roi_heads.box_head.{0,1,2}.*`` / ``roi_heads.box_predictor.{0,1,2}.*``, so Detectron2
would report them as unexpected and leave every stage random.

:class:`SeededCascadeROIHeads` rewrites such an incoming state dict while it is loaded
(whoever loads it: ``DetectionCheckpointer``, ``load_state_dict``), seeding every stage
from the single head with :func:`detpre.checkpoint.cascade_seed.seed_cascade_from_single_head`.
Cascade checkpoints (e.g. ``--resume``) load unchanged.
"""

import logging
from typing import Sequence

from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import CascadeROIHeads

from ...checkpoint.cascade_seed import has_single_head, seed_cascade_from_single_head

logger = logging.getLogger(__name__)

__all__ = ["SeededCascadeROIHeads"]


@ROI_HEADS_REGISTRY.register()
class SeededCascadeROIHeads(CascadeROIHeads):
    """``CascadeROIHeads`` that seeds its stages from a single-head checkpoint when loaded.

    Config keys, beyond ``CascadeROIHeads``'s:
      * ``MODEL.ROI_BOX_CASCADE_HEAD.SEED_FROM_SINGLE_HEAD``: do it (default True);
      * ``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS``: the single head's regression weights, which
        the stages' ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS`` are compared with. The
        checkpoint does not record them; the default (10, 10, 5, 5) is every Detectron2
        Mask R-CNN's.
    """

    @configurable
    def __init__(
        self,
        *,
        seed_from_single_head: bool = True,
        single_head_bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.seed_from_single_head = seed_from_single_head
        self.single_head_bbox_reg_weights = tuple(single_head_bbox_reg_weights)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["seed_from_single_head"] = cfg.MODEL.ROI_BOX_CASCADE_HEAD.SEED_FROM_SINGLE_HEAD
        ret["single_head_bbox_reg_weights"] = cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS
        return ret

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Runs before the children load (in every torch version), so the stages find their
        # keys; the state dict is rewritten in place because that is the dict torch goes on
        # to read.
        if self.seed_from_single_head and has_single_head(state_dict, prefix):
            own = {
                prefix + k: tuple(v.shape)
                for k, v in self.state_dict().items()
                if k.startswith(("box_head.", "box_predictor."))
            }
            seeded, report = seed_cascade_from_single_head(
                state_dict,
                num_stages=self.num_cascade_stages,
                single_reg_weights=self.single_head_bbox_reg_weights,
                stage_reg_weights=[p.box2box_transform.weights for p in self.box_predictor],
                prefix=prefix,
                expected_shapes=own,
            )
            state_dict.clear()
            state_dict.update(seeded)
            logger.info(report.format(prefix))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
