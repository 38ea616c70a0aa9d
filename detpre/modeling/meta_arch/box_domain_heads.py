"""What box-domain pre-training computes *inside* a Detectron2 detector.

AlignDet keeps a detector's own modules and only swaps its classifier for a projection
to an embedding; the targets are unsupervised proposals instead of labelled objects.
A :class:`BoxDomainHead` does that for one family of Detectron2 detectors, driving the
detector's public submodules (backbone, RPN, ROI box heads and predictors, RetinaNet head)
rather than forking them, so that the weights it trains are exactly the weights the plain
detector loads for fine-tuning:

* :class:`RCNNBoxDomainHead` (``GeneralizedRCNN`` with ``StandardROIHeads`` or
  ``CascadeROIHeads``): the RPN learns the proposals as class-agnostic objects with its own
  losses and sampler (``MODEL.RPN.BATCH_SIZE_PER_IMAGE`` / ``POSITIVE_FRACTION``); RoIs (RPN
  output + the proposals themselves) are assigned to proposals by the ROI heads' own matcher
  (IoU >= 0.5; 0.5/0.6/0.7 per cascade stage) and sampled by :class:`BoxSampler`, and per
  stage the box head's feature feeds (a) the box predictor's class-agnostic regression to
  the assigned proposal and (b) a projection MLP replacing ``cls_score``.
* :class:`RetinaNetBoxDomainHead`: anchors are assigned by RetinaNet's anchor matcher and
  sampled by :class:`BoxSampler`; the box subnet regresses the assigned proposal, and the
  classification subnet's feature at each sampled anchor feeds a projection that replaces
  ``cls_score`` (one embedding per anchor of a location, like ``cls_score`` has one logit
  vector per anchor).

Sampled background boxes (``BoxSampler.background_negatives``) get the identity
:data:`BACKGROUND_ID`: the contrastive loss uses them as negatives only, and they are never
regressed (AlignDet's RetinaNet and HTC pre-training).

A head holds only its projection MLPs; the detector is passed to :meth:`forward`, so the
online and the momentum branch share the code with their own weights.

FCOS: Detectron2 has an ``FCOS`` class only for LazyConfig (it is not in
``META_ARCH_REGISTRY`` and has no yacs keys, and Detectron2 0.6's core lacks it), so a
config-built :class:`BoxDomainPretrainer` cannot wrap it.
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch import GeneralizedRCNN, RetinaNet
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads
from detectron2.structures import Boxes, Instances, pairwise_iou
from fvcore.nn import giou_loss, smooth_l1_loss
from torch import nn

__all__ = [
    "BACKGROUND_ID",
    "BoxEmbeddings",
    "BoxSampler",
    "BoxDomainHead",
    "RCNNBoxDomainHead",
    "RetinaNetBoxDomainHead",
    "UNTRAINED_PARAMETERS",
    "build_box_domain_head",
]

#: Parameters of the wrapped detector that box-domain pre-training never uses: the
#: classifiers (replaced by projections) and the mask / keypoint heads (no such targets).
#: They are frozen during pre-training and re-initialised for fine-tuning.
UNTRAINED_PARAMETERS = (
    re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.cls_score\."),
    re.compile(r"^roi_heads\.(mask|keypoint)_(head|pooler)\."),
    re.compile(r"^head\.cls_score\."),
)


def is_untrained(name: str) -> bool:
    """Whether detector parameter ``name`` is one of :data:`UNTRAINED_PARAMETERS`."""
    return any(p.search(name) for p in UNTRAINED_PARAMETERS)


#: The identity of a sampled background box: a negative, never a positive (see the loss).
BACKGROUND_ID = -1


@dataclass
class BoxEmbeddings:
    """Embeddings of the positive RoIs/anchors of a batch and their proposal identities."""

    embeddings: torch.Tensor  # P x D
    ids: torch.Tensor  # P, unique across the images of the batch; BACKGROUND_ID for background

    def __len__(self) -> int:
        return len(self.ids)


def projection_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """fc-relu-fc, MoCo v2's projection, which AlignDet puts where the classifier was."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


def regression_loss(
    transform: Box2BoxTransform,
    loss_type: str,
    beta: float,
    deltas: torch.Tensor,
    src: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """Summed class-agnostic box regression loss of ``deltas`` applied to ``src`` vs ``target``,
    with the detector's own loss type (``smooth_l1``, beta 0 being AlignDet's L1, or ``giou``)."""
    if loss_type == "smooth_l1":
        return smooth_l1_loss(deltas, transform.get_deltas(src, target), beta, reduction="sum")
    if loss_type == "giou":
        return giou_loss(transform.apply_deltas(deltas, src), target, reduction="sum")
    raise ValueError(f"Box-domain pre-training supports BBOX_REG_LOSS_TYPE 'smooth_l1' and 'giou', not {loss_type!r}.")


def _sample(indices: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` of ``indices``, drawn at random (torch RNG: seeded per step)."""
    if len(indices) <= limit:
        return indices
    return indices[torch.randperm(len(indices), device=indices.device)[:limit]]


@dataclass(frozen=True)
class BoxSampler:
    """mmdet's ``RandomSampler(num, pos_fraction, neg_pos_ub=-1)`` over matcher labels (1
    positive, 0 background, -1 ignored): up to ``int(samples_per_image * positive_fraction)``
    random positives, then, with ``background_negatives``, random background boxes up to
    ``samples_per_image`` in all. Without it no background is sampled (AlignDet's R-CNN:
    ``neg_pos_ub=0``)."""

    samples_per_image: int = 4096
    positive_fraction: float = 1.0
    background_negatives: bool = False

    def __post_init__(self):
        if self.samples_per_image < 1 or not 0.0 < self.positive_fraction <= 1.0:
            raise ValueError(
                f"MODEL.BOX_DOMAIN.SAMPLES_PER_IMAGE must be >= 1 and POSITIVE_FRACTION in (0, 1], got "
                f"{self.samples_per_image} and {self.positive_fraction}."
            )

    def __call__(self, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Indices of the sampled positives and of the sampled background boxes."""
        positive = _sample(torch.nonzero(labels == 1).squeeze(1), int(self.samples_per_image * self.positive_fraction))
        if not self.background_negatives:
            return positive, positive[:0]
        background = _sample(torch.nonzero(labels == 0).squeeze(1), self.samples_per_image - len(positive))
        return positive, background


class BoxDomainHead(nn.Module):
    """Box embeddings (and, for the online branch, losses) of one family of detectors."""

    #: Number of embedding stages (cascade stages; 1 otherwise), and each one's loss weight.
    num_stages: int = 1
    stage_weights: Tuple[float, ...] = (1.0,)

    def forward(
        self, detector: nn.Module, views: List[Dict], targets: List[Instances], with_losses: bool
    ) -> Tuple[List[BoxEmbeddings], Dict[str, torch.Tensor]]:
        """
        Args:
            detector: the detector this head was built for (online or momentum copy).
            views: mapper outputs of one view (``image`` tensors).
            targets: per image, the proposals in this view (``gt_boxes``, ``gt_ids``), on
                the detector's device.
            with_losses: compute the detector's supervised losses (the online branch).
        Returns:
            Per stage, the embeddings of the sampled boxes (positives, and background with
            :data:`BACKGROUND_ID`); and the losses (empty if not asked), weighted per stage.
        """
        raise NotImplementedError


class RCNNBoxDomainHead(BoxDomainHead):
    """Box-domain pre-training of ``GeneralizedRCNN`` with standard or cascade ROI heads."""

    def __init__(
        self,
        detector: GeneralizedRCNN,
        embed_dim: int,
        sampler: BoxSampler,
        regression_weight: float,
        stage_weights: Sequence[float] = (1.0,),
        refine_stages: bool = False,
    ):
        super().__init__()
        roi_heads = detector.roi_heads
        if detector.proposal_generator is None:
            raise ValueError("Box-domain pre-training needs an RPN (MODEL.PROPOSAL_GENERATOR.NAME: RPN).")
        if isinstance(roi_heads, CascadeROIHeads):
            predictors = list(roi_heads.box_predictor)
        elif isinstance(roi_heads, StandardROIHeads):
            predictors = [roi_heads.box_predictor]
        else:
            raise TypeError(
                f"Box-domain pre-training supports StandardROIHeads and CascadeROIHeads (and their "
                f"subclasses), not {type(roi_heads).__name__} (MODEL.ROI_HEADS.NAME)."
            )
        for predictor in predictors:
            if predictor.bbox_pred.out_features != 4:
                raise ValueError(
                    "Box-domain pre-training regresses class-agnostic proposals: set "
                    "MODEL.ROI_HEADS.NUM_CLASSES: 1 or MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: True "
                    f"(the box predictor has {predictor.bbox_pred.out_features} outputs)."
                )
        self.num_stages = len(predictors)
        if len(stage_weights) < self.num_stages:
            raise ValueError(
                f"MODEL.BOX_DOMAIN.STAGE_WEIGHTS {tuple(stage_weights)} has fewer weights than the "
                f"{self.num_stages} stages of the ROI heads."
            )
        self.stage_weights = tuple(float(w) for w in stage_weights[: self.num_stages])
        self.sampler = sampler
        self.regression_weight = regression_weight
        self.refine_stages = refine_stages
        self.projectors = nn.ModuleList(projection_mlp(p.bbox_pred.in_features, embed_dim) for p in predictors)

    @staticmethod
    def _stages(roi_heads) -> Sequence[Tuple[nn.Module, nn.Module, object]]:
        """(box head, box predictor, matcher) of each stage."""
        if isinstance(roi_heads, CascadeROIHeads):
            return list(zip(roi_heads.box_head, roi_heads.box_predictor, roi_heads.proposal_matchers))
        return [(roi_heads.box_head, roi_heads.box_predictor, roi_heads.proposal_matcher)]

    def _assign(
        self, boxes: List[Boxes], targets: List[Instances], matcher
    ) -> Tuple[List[Boxes], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled RoIs of each image (positives first, then background), whether each is a
        positive, the proposal each positive is assigned to, and every RoI's identity."""
        rois, positive_mask, assigned, ids = [], [], [], []
        for image_boxes, target in zip(boxes, targets):
            matched, labels = matcher(pairwise_iou(target.gt_boxes, image_boxes))
            positive, background = self.sampler(labels)
            rois.append(Boxes.cat([image_boxes[positive], image_boxes[background]]))
            positive_mask.append(torch.arange(len(positive) + len(background), device=labels.device) < len(positive))
            assigned.append(target.gt_boxes.tensor[matched[positive]])
            ids.append(torch.cat([target.gt_ids[matched[positive]], torch.full_like(background, BACKGROUND_ID)]))
        return rois, torch.cat(positive_mask), torch.cat(assigned), torch.cat(ids)

    def forward(self, detector, views, targets, with_losses):
        images = detector.preprocess_image(views)
        features = detector.backbone(images.tensor)
        proposals, losses = detector.proposal_generator(images, features, targets if with_losses else None)
        losses = dict(losses) if with_losses else {}
        roi_heads = detector.roi_heads
        box_features = [features[f] for f in roi_heads.box_in_features]
        # Every proposal is its own RoI too (Detectron2's PROPOSAL_APPEND_GT, AlignDet's
        # add_gt_as_proposals), so each has a positive even while the RPN is untrained.
        boxes = [Boxes.cat([p.proposal_boxes, t.gt_boxes]) for p, t in zip(proposals, targets)]
        outputs = []
        for stage, (box_head, predictor, matcher) in enumerate(self._stages(roi_heads)):
            suffix = f"_stage{stage}" if self.num_stages > 1 else ""
            rois, positive, assigned, ids = self._assign(boxes, targets, matcher)
            x = torch.flatten(box_head(roi_heads.box_pooler(box_features, rois)), start_dim=1)
            outputs.append(BoxEmbeddings(self.projectors[stage](x), ids))
            last = stage == self.num_stages - 1
            refine = self.refine_stages and not last
            if not (with_losses or refine):
                continue
            deltas = predictor.bbox_pred(x)
            roi_tensor = torch.cat([r.tensor for r in rois])
            if with_losses:
                loss = regression_loss(
                    predictor.box2box_transform,
                    predictor.box_reg_loss_type,
                    predictor.smooth_l1_beta,
                    deltas[positive],
                    roi_tensor[positive],
                    assigned,
                )
                # Normalised by the sampled RoIs, as AlignDet (avg_factor = all sampled RoIs).
                weight = self.regression_weight * self.stage_weights[stage]
                losses[f"loss_box_reg{suffix}"] = loss / max(len(ids), 1) * weight
            if refine:
                # The next stage sees this stage's refined boxes, as in CascadeROIHeads.
                refined = predictor.box2box_transform.apply_deltas(deltas.detach(), roi_tensor)
                boxes = []
                for chunk, target in zip(refined.split([len(r) for r in rois]), targets):
                    chunk = Boxes(chunk)
                    chunk.clip(target.image_size)
                    boxes.append(chunk)
        return outputs, losses


class RetinaNetBoxDomainHead(BoxDomainHead):
    """Box-domain pre-training of ``RetinaNet``, on the anchor level."""

    def __init__(
        self,
        detector: RetinaNet,
        embed_dim: int,
        sampler: BoxSampler,
        regression_weight: float,
        stage_weights: Sequence[float] = (1.0,),
    ):
        super().__init__()
        cls_score = detector.head.cls_score
        self.num_anchors = cls_score.out_channels // detector.num_classes
        self.embed_dim = embed_dim
        self.sampler = sampler
        self.regression_weight = regression_weight
        self.stage_weights = (float(stage_weights[0]),)
        # Applied to the classification subnet's feature of a location: one embedding per
        # anchor, as cls_score (a 1x1-equivalent use of its 3x3 conv) gives one per anchor.
        self.projector = projection_mlp(cls_score.in_channels, self.num_anchors * embed_dim)

    @staticmethod
    def _flatten(maps: List[torch.Tensor], channels: int) -> torch.Tensor:
        """Per-level N x (A*channels) x H x W maps -> N x (sum H*W*A) x channels, in the order of
        Detectron2's anchors (location-major, anchor-minor, level after level)."""
        out = []
        for x in maps:
            n, _, h, w = x.shape
            out.append(x.view(n, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, channels))
        return torch.cat(out, dim=1)

    def forward(self, detector, views, targets, with_losses):
        images = detector.preprocess_image(views)
        all_features = detector.backbone(images.tensor)
        features = [all_features[f] for f in detector.head_in_features]
        anchors = Boxes.cat(detector.anchor_generator(features))
        cls_features = [detector.head.cls_subnet(f) for f in features]
        locations = self._flatten(cls_features, cls_features[0].shape[1])  # N x L x C, L = R / A
        deltas = None
        if with_losses:
            deltas = self._flatten([detector.head.bbox_pred(detector.head.bbox_subnet(f)) for f in features], 4)

        inputs, anchor_index, ids, pred, src, dst = [], [], [], [], [], []
        for i, target in enumerate(targets):
            matched, labels = detector.anchor_matcher(pairwise_iou(target.gt_boxes, anchors))
            positive, background = self.sampler(labels)
            sampled = torch.cat([positive, background])
            inputs.append(locations[i, sampled // self.num_anchors])
            anchor_index.append(sampled % self.num_anchors)
            ids.append(torch.cat([target.gt_ids[matched[positive]], torch.full_like(background, BACKGROUND_ID)]))
            if deltas is not None:
                pred.append(deltas[i, positive])
                src.append(anchors.tensor[positive])
                dst.append(target.gt_boxes.tensor[matched[positive]])
        projected = self.projector(torch.cat(inputs)).view(-1, self.num_anchors, self.embed_dim)
        anchor_index = torch.cat(anchor_index)
        embeddings = projected[torch.arange(len(anchor_index), device=projected.device), anchor_index]
        outputs = [BoxEmbeddings(embeddings, torch.cat(ids))]
        losses = {}
        if with_losses:
            loss = regression_loss(
                detector.box2box_transform,
                detector.box_reg_loss_type,
                detector.smooth_l1_beta,
                torch.cat(pred),
                torch.cat(src),
                torch.cat(dst),
            )
            # Normalised by the positive anchors, as AlignDet (avg_factor = num_total_pos).
            weight = self.regression_weight * self.stage_weights[0]
            losses["loss_box_reg"] = loss / max(sum(len(p) for p in pred), 1) * weight
        return outputs, losses


def build_box_domain_head(
    detector: nn.Module,
    embed_dim: int,
    sampler: BoxSampler,
    regression_weight: float,
    stage_weights: Sequence[float] = (1.0,),
    refine_stages: bool = False,
) -> BoxDomainHead:
    """The :class:`BoxDomainHead` for ``detector`` (an error names unsupported detectors)."""
    if isinstance(detector, GeneralizedRCNN):
        return RCNNBoxDomainHead(detector, embed_dim, sampler, regression_weight, stage_weights, refine_stages)
    if isinstance(detector, RetinaNet):
        return RetinaNetBoxDomainHead(detector, embed_dim, sampler, regression_weight, stage_weights)
    raise TypeError(
        f"Box-domain pre-training supports GeneralizedRCNN and RetinaNet detectors, not "
        f"{type(detector).__name__} (MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE)."
    )
