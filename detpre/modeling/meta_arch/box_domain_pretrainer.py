"""``BoxDomainPretrainer``: AlignDet's box-domain pre-training of any Detectron2 detector.

AlignDet (Li et al., ICCV 2023) splits pre-training in two: image-domain pre-training gives
the backbone (ImageNet, self-supervised, or a from-scratch run), then *box-domain*
pre-training trains everything else (FPN, RPN, box heads, dense heads) on unlabeled images,
with selective-search proposals as class-agnostic targets, seen in two augmented views:

* the *online* detector, run on view 1, learns with its own regression losses to regress
  the proposals (the RPN also learns their objectness), and embeds every positive box
  through a projection that replaces the classifier;
* a *momentum* copy, an exponential moving average of the online weights run without
  gradient on view 2, embeds the same proposals;
* a box-level InfoNCE (:mod:`.box_contrastive_loss`) pulls an online box towards the
  momentum boxes of the *same* proposal and away from those of the others.

The detector is built from the config as usual (``MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE``
and the rest of ``MODEL.*``); what is detector-specific lives in :mod:`.box_domain_heads`.
The state dict holds ``online.*`` (exactly the plain detector's keys under a prefix),
``head.*`` (projections), ``momentum.*``, ``momentum_head.*`` and the step count;
``tools/convert_pretrained.py`` extracts fine-tuning weights.

The EMA of step ``t`` is applied at the start of forward ``t + 1``, i.e. after the
optimizer step of ``t`` and before the momentum branch is used again: the model needs no
trainer hook, and a resumed run (whose checkpoint was written after a step) continues the
EMA exactly, since the step count is a buffer saved with the weights.
"""

import copy
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds
from torch import nn

from ...checkpoint import DetpreCheckpointer
from ..backbone.bottom_up import bottom_up
from .box_contrastive_loss import box_contrastive_loss, embedding_spread
from .box_domain_heads import BACKGROUND_ID, BoxEmbeddings, BoxSampler, build_box_domain_head, is_untrained
from .pretraining import check_two_views, collapse_warning, ema_update_, refuse_precise_bn

logger = logging.getLogger(__name__)

__all__ = ["BoxDomainPretrainer", "cosine_momentum", "detector_cfg"]


def detector_cfg(cfg: CfgNode) -> CfgNode:
    """The config of the detector a box-domain pre-training config wraps: a copy whose
    ``MODEL.META_ARCHITECTURE`` is ``MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE`` (the model a
    box-domain checkpoint's weights, and its image-domain input weights, are for)."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.META_ARCHITECTURE = cfg.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE
    return out


def cosine_momentum(step: int, max_steps: int, base: float, end: float) -> float:
    """EMA momentum at ``step``: ``base`` at 0 rising to ``end`` at ``max_steps`` on a half cosine."""
    progress = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return end - (end - base) * (math.cos(math.pi * progress) + 1) / 2


@META_ARCH_REGISTRY.register()
class BoxDomainPretrainer(nn.Module):
    """Online + momentum detector trained on unsupervised proposals in two views.

    Training input: the outputs of ``TwoViewDatasetMapper`` (``{"views": [view1, view2]}``).
    Returns Detectron2's loss dict: the detector's own regression losses (``loss_rpn_*``,
    ``loss_box_reg[_stageK]``) and ``loss_box_contrast[_stageK]``. At inference the online
    detector runs as is (its classifier is untrained: only its boxes mean anything).
    """

    @configurable
    def __init__(
        self,
        *,
        detector: nn.Module,
        max_iter: int,
        embed_dim: int = 256,
        temperature: float = 0.5,
        base_momentum: float = 0.996,
        end_momentum: float = 1.0,
        contrastive_weight: float = 1.0,
        regression_weight: float = 1.0,
        freeze_backbone: bool = True,
        sampler: Optional[BoxSampler] = None,
        stage_weights: Sequence[float] = (1.0, 0.5, 0.25),
        refine_cascade_stages: bool = False,
    ):
        """
        Args:
            detector: the detector to pre-train, with its image-domain weights loaded.
            max_iter: length of the schedule, for the momentum's cosine.
            Others: see ``MODEL.BOX_DOMAIN`` in :func:`detpre.config.add_detpre_config`.
        """
        super().__init__()
        if not 0.0 <= base_momentum <= end_momentum <= 1.0:
            raise ValueError(
                f"Need 0 <= MODEL.BOX_DOMAIN.BASE_MOMENTUM ({base_momentum}) <= END_MOMENTUM ({end_momentum}) <= 1."
            )
        if temperature <= 0:
            raise ValueError(f"MODEL.BOX_DOMAIN.TEMPERATURE must be positive, got {temperature}.")
        self.online = detector
        self.head = build_box_domain_head(
            detector, embed_dim, sampler or BoxSampler(), regression_weight, stage_weights, refine_cascade_stages
        )
        self.max_iter = max_iter
        self.temperature = temperature
        self.base_momentum = base_momentum
        self.end_momentum = end_momentum
        self.contrastive_weight = contrastive_weight
        self.freeze_backbone = freeze_backbone

        for name, param in self.online.named_parameters():
            if is_untrained(name):
                # Never reached by a loss: frozen, so DDP and the optimizer ignore it.
                param.requires_grad_(False)
        if freeze_backbone:
            for param in self._frozen_backbone().parameters():
                param.requires_grad_(False)
        self.momentum = copy.deepcopy(self.online)
        self.momentum_head = copy.deepcopy(self.head)
        for param in list(self.momentum.parameters()) + list(self.momentum_head.parameters()):
            param.requires_grad_(False)
        # Training forwards done so far (a buffer: saved and restored with the weights).
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.train()

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        box = cfg.MODEL.BOX_DOMAIN
        refuse_precise_bn(cfg)
        if box.DETECTOR_ARCHITECTURE == cls.__name__:
            raise ValueError("MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE must name a detector, not BoxDomainPretrainer.")
        detector = META_ARCH_REGISTRY.get(box.DETECTOR_ARCHITECTURE)(detector_cfg(cfg))
        detector.to(torch.device(cfg.MODEL.DEVICE))
        if box.DETECTOR_WEIGHTS:
            logger.info("Loading image-domain weights of the detector from %s", box.DETECTOR_WEIGHTS)
            # detpre's checkpointer inflates a 3-channel stem for multispectral (KAIST) inputs.
            DetpreCheckpointer(detector).load(box.DETECTOR_WEIGHTS)
        return {
            "detector": detector,
            "max_iter": cfg.SOLVER.MAX_ITER,
            "embed_dim": box.EMBED_DIM,
            "temperature": box.TEMPERATURE,
            "base_momentum": box.BASE_MOMENTUM,
            "end_momentum": box.END_MOMENTUM,
            "contrastive_weight": box.CONTRASTIVE_WEIGHT,
            "regression_weight": box.REGRESSION_WEIGHT,
            "freeze_backbone": box.FREEZE_BACKBONE,
            "sampler": BoxSampler(box.SAMPLES_PER_IMAGE, box.POSITIVE_FRACTION, box.BACKGROUND_NEGATIVES),
            "stage_weights": tuple(box.STAGE_WEIGHTS),
            "refine_cascade_stages": box.REFINE_CASCADE_STAGES,
        }

    def _frozen_backbone(self) -> nn.Module:
        """The image-domain part: an FPN's bottom-up network, else the whole backbone."""
        return bottom_up(self.online.backbone)

    def train(self, mode: bool = True) -> "BoxDomainPretrainer":
        super().train(mode)
        # The momentum branch only ever infers; a frozen backbone keeps its norm statistics.
        self.momentum.eval()
        self.momentum_head.eval()
        if self.freeze_backbone:
            self._frozen_backbone().eval()
        return self

    def momentum_at(self, step: int) -> float:
        return cosine_momentum(step, self.max_iter, self.base_momentum, self.end_momentum)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """momentum_weights <- momentum * momentum_weights + (1 - momentum) * online_weights;
        buffers (norm statistics) are copied."""
        ema_update_(self.momentum, self.online, momentum)
        ema_update_(self.momentum_head, self.head, momentum)

    def _targets(self, batched_inputs: List[Dict[str, Any]]) -> Tuple[List[Instances], List[Instances]]:
        """Each view's proposals on the device, identities made unique across the batch."""
        check_two_views(batched_inputs, "BoxDomainPretrainer", "TwoViewDatasetMapper")
        device = self.steps.device
        per_view: Tuple[List[Instances], List[Instances]] = ([], [])
        stride = 1 + max(
            (int(v["instances"].gt_ids.max()) for x in batched_inputs for v in x["views"] if len(v["instances"])),
            default=0,
        )
        for index, x in enumerate(batched_inputs):
            for view, out in zip(x["views"], per_view):
                instances = view["instances"].to(device)
                instances.gt_ids = instances.gt_ids + index * stride
                out.append(instances)
        return per_view

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        if not self.training:
            return self.online(batched_inputs)
        step = int(self.steps)
        if step > 0:
            self.momentum_update(self.momentum_at(step - 1))
        self.steps += 1
        online_targets, momentum_targets = self._targets(batched_inputs)
        online, losses = self.head(self.online, [x["views"][0] for x in batched_inputs], online_targets, True)
        with torch.no_grad():
            momentum, _ = self.momentum_head(
                self.momentum, [x["views"][1] for x in batched_inputs], momentum_targets, False
            )
        storage = get_event_storage()
        storage.put_scalar("box_domain/momentum", self.momentum_at(step), smoothing_hint=False)
        for stage, (queries, keys) in enumerate(zip(online, momentum)):
            suffix = f"_stage{stage}" if len(online) > 1 else ""
            loss, stats = box_contrastive_loss(
                queries.embeddings, queries.ids, keys.embeddings, keys.ids, self.temperature
            )
            losses[f"loss_box_contrast{suffix}"] = loss * self.contrastive_weight * self.head.stage_weights[stage]
            self._log(storage, suffix, queries, keys, stats, len(batched_inputs))
        return losses

    @staticmethod
    def _log(
        storage, suffix: str, queries: BoxEmbeddings, keys: BoxEmbeddings, stats: Dict[str, torch.Tensor], images: int
    ):
        """Positives, matched pairs and embedding spread; a collapse drives the spread to 0."""
        positive = queries.ids != BACKGROUND_ID
        storage.put_scalar(f"box_domain/positives_per_image{suffix}", int(positive.sum()) / images)
        storage.put_scalar(
            f"box_domain/momentum_positives_per_image{suffix}", int((keys.ids != BACKGROUND_ID).sum()) / images
        )
        if not bool(positive.all()):
            storage.put_scalar(f"box_domain/background_per_image{suffix}", int((~positive).sum()) / images)
        storage.put_scalar(f"box_domain/identities{suffix}", stats["num_identities"].item())
        storage.put_scalar(f"box_domain/pairs{suffix}", stats["num_pairs"].item())
        storage.put_scalar(f"box_domain/positive_cosine{suffix}", stats["positive_similarity"].item())
        if int(positive.sum()) >= 2:
            spread = embedding_spread(queries.embeddings[positive]).item()
            storage.put_scalar(f"box_domain/embedding_spread{suffix}", spread)
            warning = collapse_warning(
                f"Box embeddings{suffix}", spread, storage.iter, "MODEL.BOX_DOMAIN.TEMPERATURE or BASE_MOMENTUM"
            )
            if warning:
                log_every_n_seconds(logging.WARNING, warning, n=60, name=__name__)
