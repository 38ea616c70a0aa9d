"""``ImageDomainPretrainer``: self-supervised pre-training of a detector's backbone on the
unlabeled images of any registered dataset (MoCo v2, DenseCL, cross-modal visible/thermal).

The first stage of a target-only chain, image-domain (this) -> box-domain
(:class:`.BoxDomainPretrainer`) -> fine-tuning, for data such as KAIST's where ImageNet is
not the domain. It pre-trains the bottom-up network of whatever backbone the config builds
(ResNet / ResNeXt with GN or SyncBN, any input channels, the two-stream halfway-fusion
backbone) and trains with ``tools/train_net.py`` like every other model:

* a *query* encoder (:class:`.ContrastiveEncoder`: the network plus projection heads) is
  trained by SGD on view 1; a *key* encoder, its exponential moving average (momentum
  ``MODEL.IMAGE_DOMAIN.MOMENTUM`` over parameters; norm statistics are the key encoder's
  own), embeds view 2 without gradient; past keys wait in queues
  (:class:`.KeyQueue`) as negatives of MoCo's InfoNCE (:func:`.queue_info_nce`);
* ``densecl`` adds DenseCL's dense head: every location of view 1's last stage is a query
  whose positive is the location of view 2 with the most similar *backbone* feature, whose
  negatives a second queue of pooled dense keys;
* ``CROSS_MODAL`` makes the visible and the thermal frame of a pair the two views (CMC): each
  direction (visible queries, thermal keys; and the reverse) has its own queue of the key
  modality's past keys, and the two losses are averaged.

Like :class:`.BoxDomainPretrainer` the model needs no trainer hook: the EMA is applied at the
start of each training forward (at the first, the key encoder is copied from the query
encoder, so that weights loaded after construction reach both) and the step count, the
queues and their pointers are buffers saved with the weights: a resumed run continues
exactly (detpre's trainer re-seeds every step and its loader resumes its data stream).

The queues start as MoCo's, random unit vectors that are negatives from the first step, or
(``QUEUE_START "empty"``, detpre's GN configs) hold only keys of past batches: random
negatives reward mapping every image to one point, which BN's batch centering forbids and GN
allows (docs/image_domain_ssl.md has the measurement).

Batch statistics leak between the two views through BatchNorm (MoCo's "shuffle BN" reason).
detpre's configs use GroupNorm, whose statistics are per sample: nothing leaks, nothing is
shuffled. With batch-statistics norms on several processes the key batch is shuffled across
ranks as in MoCo, and the key encoder's SyncBN is made per-process (statistics of a random
subset of the keys, as MoCo's per-GPU BN); in one process a shuffle changes nothing, which a
warning says.
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import NaiveSyncBatchNorm, ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...data.multispectral import LWIR, VISIBLE, MultispectralFormat
from .box_contrastive_loss import embedding_spread
from .image_domain_contrast import (
    KeyQueue,
    broadcast_from_rank0,
    gather_across_ranks,
    match_locations,
    queue_info_nce,
    shuffle_across_ranks,
    unshuffle_across_ranks,
)
from .image_domain_encoder import ContrastiveEncoder, EncoderOutput, unreachable_parameters
from .pretraining import check_two_views, collapse_warning, ema_update_, refuse_precise_bn

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "ImageDomainPretrainer", "per_process_batch_norms"]

#: ``MODEL.IMAGE_DOMAIN.METHOD`` values.
METHODS = ("moco_v2", "densecl")


def has_batch_statistics(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def per_process_batch_norms(module: nn.Module) -> int:
    """Replace every SyncBN of ``module`` (torch's or Detectron2's all-reduce one) by a BatchNorm2d
    with the same state and the same ``requires_grad``, in place; return how many. Parameter and
    buffer names do not change."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (nn.SyncBatchNorm, NaiveSyncBatchNorm)):
            local = nn.BatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            local.load_state_dict(child.state_dict())
            for param, original in zip(local.parameters(), child.parameters()):
                param.requires_grad_(original.requires_grad)
            tensors = [*child.parameters(), *child.buffers()]
            setattr(module, name, local.to(tensors[0].device) if tensors else local)
            count += 1
        else:
            count += per_process_batch_norms(child)
    return count


@META_ARCH_REGISTRY.register()
class ImageDomainPretrainer(nn.Module):
    """Query + key encoders and key queues trained on two views of unlabeled images.

    Training input: the outputs of ``TwoCropDatasetMapper`` (``{"views": [view1, view2]}``, each
    ``{"image": C x S x S uint8, "modality": None | "visible" | "lwir"}``). Returns
    ``loss_global_contrast`` (and ``loss_dense_contrast`` for DenseCL). At inference, each image
    dict with an ``"image"`` gets its query embedding (``{"embedding": D}``).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_mean: List[float],
        pixel_std: List[float],
        method: str = "moco_v2",
        cross_modal: bool = False,
        modality_channels: Optional[Dict[str, Tuple[int, int]]] = None,
        embed_dim: int = 128,
        hidden_dim: int = 2048,
        queue_size: int = 65536,
        queue_start: str = "random",
        momentum: float = 0.999,
        temperature: float = 0.2,
        dense_loss_weight: float = 0.5,
    ):
        """
        Args:
            backbone: the detector's backbone as the config builds it (its bottom-up network
                is pre-trained).
            pixel_mean, pixel_std: the detector's input normalisation, one value per channel.
            modality_channels: for ``cross_modal``, ``{modality: (first, end)}`` channel ranges.
            Others: see ``MODEL.IMAGE_DOMAIN`` in :func:`detpre.config.add_detpre_config`.
        """
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"MODEL.IMAGE_DOMAIN.METHOD {method!r} is not one of {METHODS}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MODEL.IMAGE_DOMAIN.MOMENTUM must be in [0, 1), got {momentum}.")
        if temperature <= 0:
            raise ValueError(f"MODEL.IMAGE_DOMAIN.TEMPERATURE must be positive, got {temperature}.")
        if not 0.0 <= dense_loss_weight <= 1.0:
            raise ValueError(f"MODEL.IMAGE_DOMAIN.DENSE_LOSS_WEIGHT must be in [0, 1], got {dense_loss_weight}.")
        if cross_modal and set(modality_channels or ()) != {VISIBLE, LWIR}:
            raise ValueError("MODEL.IMAGE_DOMAIN.CROSS_MODAL needs the channel range of both modalities.")
        self.method = method
        self.dense = method == "densecl"
        self.cross_modal = cross_modal
        self.modality_channels = dict(modality_channels or {})
        self.momentum = momentum
        self.temperature = temperature
        self.dense_loss_weight = dense_loss_weight if self.dense else 0.0

        self.encoder_q = ContrastiveEncoder(backbone, embed_dim, hidden_dim, dense=self.dense, kaiming_heads=self.dense)
        network = self.encoder_q.network
        unreachable = unreachable_parameters(network, self.encoder_q.feature, len(pixel_mean))
        for name, param in network.named_parameters():
            if name in unreachable:
                param.requires_grad_(False)
        if unreachable:
            logger.info(
                "Frozen at their initialization, since %s does not depend on them (they feed the FPN only): %s",
                self.encoder_q.feature,
                ", ".join(unreachable),
            )
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)
        self.shuffle_keys = has_batch_statistics(network) and comm.get_world_size() > 1
        if self.shuffle_keys:
            converted = per_process_batch_norms(self.encoder_k)
            logger.info(
                "Shuffle BN: the key batch is shuffled across the %d ranks; %d SyncBN layers of the key encoder "
                "compute per-process statistics.",
                comm.get_world_size(),
                converted,
            )
        elif has_batch_statistics(network):
            logger.warning(
                "%s has batch-statistics norms in one process: the query and its key are normalised with "
                "statistics of the same images, the leak MoCo's shuffle BN prevents on several GPUs. Prefer GN "
                "(MODEL.RESNETS.NORM GN), or train on several processes.",
                type(network).__name__,
            )
        modalities = (VISIBLE, LWIR) if cross_modal else (None,)
        heads = ("global", "dense") if self.dense else ("global",)
        self.queues = nn.ModuleDict(
            {
                self._queue_name(head, m): KeyQueue(queue_size, embed_dim, queue_start)
                for head in heads
                for m in modalities
            }
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        # Training forwards done so far (a buffer: saved and restored with the weights).
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        ssl = cfg.MODEL.IMAGE_DOMAIN
        refuse_precise_bn(cfg)
        if ssl.QUEUE_SIZE % cfg.SOLVER.IMS_PER_BATCH:
            raise ValueError(
                f"MODEL.IMAGE_DOMAIN.QUEUE_SIZE ({ssl.QUEUE_SIZE}) must be a multiple of SOLVER.IMS_PER_BATCH "
                f"({cfg.SOLVER.IMS_PER_BATCH}): each batch fills whole queue slots, as in MoCo."
            )
        modality_channels = None
        if ssl.CROSS_MODAL:
            fmt = MultispectralFormat.parse(cfg.INPUT.FORMAT)
            fmt.check_cross_modal(cfg.INPUT.FORMAT)
            modality_channels = {VISIBLE: (0, fmt.visible_channels), LWIR: (fmt.visible_channels, fmt.channels)}
        return {
            "backbone": build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "method": ssl.METHOD,
            "cross_modal": ssl.CROSS_MODAL,
            "modality_channels": modality_channels,
            "embed_dim": ssl.EMBED_DIM,
            "hidden_dim": ssl.HIDDEN_DIM,
            "queue_size": ssl.QUEUE_SIZE,
            "queue_start": ssl.QUEUE_START,
            "momentum": ssl.MOMENTUM,
            "temperature": ssl.TEMPERATURE,
            "dense_loss_weight": ssl.DENSE_LOSS_WEIGHT,
        }

    @staticmethod
    def _queue_name(head: str, modality: Optional[str]) -> str:
        """``global`` / ``dense``, suffixed by the modality of the keys it holds (cross-modal)."""
        return head if modality is None else f"{head}_{modality}"

    @property
    def device(self) -> torch.device:
        return self.steps.device

    # ------------------------------------------------------------------ inputs

    def _normalize(self, images: List[torch.Tensor], modality: Optional[str]) -> torch.Tensor:
        """Stacked, normalised images; with ``modality``, the other modality's channels are 0 (the
        pixel mean), so that a stem over every channel sees that frame alone."""
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) != 1:
            raise ValueError(
                f"ImageDomainPretrainer stacks the views of a batch, which must have one size; got {sorted(sizes)} "
                "(TwoCropDatasetMapper crops them to INPUT.IMAGE_DOMAIN.CROP_SIZE)."
            )
        x = torch.stack(images).to(self.device, non_blocking=True).float()
        x = (x - self.pixel_mean) / self.pixel_std
        if modality is not None:
            first, end = self.modality_channels[modality]
            x[:, :first] = 0
            x[:, end:] = 0
        return x

    def _views(self, batched_inputs: List[Dict[str, Any]]) -> List[Tuple[torch.Tensor, Optional[str]]]:
        """The two views of the batch, each as (normalised images, modality shown)."""
        check_two_views(batched_inputs, "ImageDomainPretrainer", "TwoCropDatasetMapper")
        out = []
        for index in range(2):
            views = [x["views"][index] for x in batched_inputs]
            shown = {v.get("modality") for v in views}
            expected = (VISIBLE, LWIR)[index] if self.cross_modal else None
            if shown != {expected}:
                raise ValueError(
                    f"View {index + 1} shows modality {sorted(map(str, shown))}, but MODEL.IMAGE_DOMAIN.CROSS_MODAL "
                    f"{self.cross_modal} expects {expected!r}: the mapper and the model must read the same config."
                )
            out.append((self._normalize([v["image"] for v in views], expected), expected))
        return out

    # ------------------------------------------------------------------ encoders

    @torch.no_grad()
    def _update_key_encoder(self) -> None:
        """key <- m * key + (1 - m) * query over parameters (MoCo); at the first step a copy of
        parameters and buffers, and every rank's queues made rank 0's (a random start differs
        between ranks). Buffers (BN statistics) are otherwise the key encoder's own."""
        first = int(self.steps) == 0
        ema_update_(self.encoder_k, self.encoder_q, 0.0 if first else self.momentum, copy_buffers=first)
        if first:
            broadcast_from_rank0([q.keys for q in self.queues.values()])

    @torch.no_grad()
    def _keys(self, images: torch.Tensor, modality: Optional[str]) -> EncoderOutput:
        if not self.shuffle_keys:
            return self.encoder_k(images, modality)
        shuffled, order = shuffle_across_ranks(images)
        out = self.encoder_k(shuffled, modality)
        return EncoderOutput(*(None if t is None else unshuffle_across_ranks(t, order) for t in out))

    # ------------------------------------------------------------------ forward

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        if not self.training:
            images = self._normalize([x["image"] for x in batched_inputs], None)
            return [{"embedding": e} for e in self.encoder_q(images).embedding]
        views = self._views(batched_inputs)
        self._update_key_encoder()
        self.steps += 1
        # (query view, key view): MoCo's one direction; cross-modal, both.
        pairs = ((0, 1), (1, 0)) if self.cross_modal else ((0, 1),)
        queries = {i: self.encoder_q(*views[i]) for i in sorted({q for q, _ in pairs})}
        keys = {j: self._keys(*views[j]) for j in sorted({k for _, k in pairs})}
        with torch.autocast(self.device.type, enabled=False):  # logits in full precision
            losses, stats = self._losses(pairs, views, queries, keys)
        for index, out in keys.items():
            modality = views[index][1]
            self.queues[self._queue_name("global", modality)].enqueue(gather_across_ranks(out.embedding))
            if self.dense:
                self.queues[self._queue_name("dense", modality)].enqueue(gather_across_ranks(out.dense_pooled))
        self._log(stats, queries)
        return losses

    def _losses(self, pairs, views, queries: Dict[int, EncoderOutput], keys: Dict[int, EncoderOutput]):
        """Each direction's InfoNCE (global; dense), averaged over directions, then weighted
        (1 - lambda, lambda) as DenseCL."""
        totals: Dict[str, torch.Tensor] = {}
        stats: Dict[str, List[torch.Tensor]] = {}

        def add(head: str, loss: torch.Tensor, head_stats: Dict[str, torch.Tensor]) -> None:
            totals[head] = totals.get(head, 0.0) + loss / len(pairs)
            for name, value in head_stats.items():
                stats.setdefault(f"{head}_{name}", []).append(value)

        for q_index, k_index in pairs:
            q, k = queries[q_index], keys[k_index]
            key_modality = views[k_index][1]
            negatives = self.queues[self._queue_name("global", key_modality)].negatives()
            add("global", *queue_info_nce(q.embedding, k.embedding, negatives, self.temperature))
            if self.dense:
                # DenseCL: each query location's positive is the key location of the most similar
                # backbone feature; negatives are pooled dense keys of past batches.
                match = match_locations(q.features, k.features)  # N x S
                matched = torch.gather(k.dense, 2, match.unsqueeze(1).expand(-1, k.dense.shape[1], -1))
                dim = q.dense.shape[1]
                negatives = self.queues[self._queue_name("dense", key_modality)].negatives()
                add(
                    "dense",
                    *queue_info_nce(
                        q.dense.transpose(1, 2).reshape(-1, dim),
                        matched.transpose(1, 2).reshape(-1, dim),
                        negatives,
                        self.temperature,
                    ),
                )
        losses = {"loss_global_contrast": totals["global"] * (1.0 - self.dense_loss_weight)}
        if self.dense:
            losses["loss_dense_contrast"] = totals["dense"] * self.dense_loss_weight
        return losses, {name: torch.stack(values).mean() for name, values in stats.items()}

    def _log(self, stats: Dict[str, torch.Tensor], queries: Dict[int, EncoderOutput]) -> None:
        """Positive / negative cosine, top-1, embedding spread (a collapse drives it to 0) and how
        much of the queues holds real keys."""
        storage = get_event_storage()
        storage.put_scalar("image_domain/momentum", self.momentum, smoothing_hint=False)
        storage.put_scalar("image_domain/queue_fill", min(q.fill for q in self.queues.values()), smoothing_hint=False)
        for name, value in stats.items():
            storage.put_scalar(f"image_domain/{name}", value.item())
        spreads = {
            "global": [embedding_spread(q.embedding) for q in queries.values() if len(q.embedding) >= 2],
            "dense": [
                embedding_spread(q.dense.transpose(1, 2).flatten(0, 1)) for q in queries.values() if q.dense is not None
            ],
        }
        for head, values in spreads.items():
            if not values:
                continue
            spread = torch.stack(values).mean().item()
            storage.put_scalar(f"image_domain/{head}_embedding_spread", spread)
            warning = collapse_warning(
                f"Image-domain {head} embeddings", spread, storage.iter, "MODEL.IMAGE_DOMAIN.TEMPERATURE or QUEUE_SIZE"
            )
            if warning:
                log_every_n_seconds(logging.WARNING, warning, n=60, name=__name__)
