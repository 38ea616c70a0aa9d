"""The encoder of image-domain pre-training: a detector's bottom-up network and the
projection heads of MoCo v2 (global) and DenseCL (dense) on its last stage.

The network keeps the name it has in the detector (``backbone.bottom_up.*`` under an FPN,
``backbone.*`` otherwise), so the query encoder's backbone keys *are* the detector's keys
once the ``encoder_q.`` prefix is dropped (:mod:`.image_domain_weights`). The FPN itself is
not part of it: image-domain pre-training trains the bottom-up network, box-domain
pre-training and fine-tuning the rest.
"""

import logging
from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone.bottom_up import bottom_up
from ..backbone.fusion import HalfwayFusionResNet

logger = logging.getLogger(__name__)

__all__ = ["ContrastiveEncoder", "EncoderOutput", "unreachable_parameters"]


class EncoderOutput(NamedTuple):
    """One view's embeddings, each L2-normalised along its embedding dimension."""

    embedding: torch.Tensor  # N x D: the global embedding (MoCo v2)
    dense: Optional[torch.Tensor] = None  # N x D x S: one embedding per location (DenseCL)
    dense_pooled: Optional[torch.Tensor] = None  # N x D: the mean dense projection, DenseCL's queue entry
    features: Optional[torch.Tensor] = None  # N x C x S: the last stage's map, for DenseCL's matching


class _BottomUpPath(nn.Module):
    """Holds an FPN's bottom-up network under the name it has in the FPN (``bottom_up``)."""

    def __init__(self, bottom_up: nn.Module):
        super().__init__()
        self.bottom_up = bottom_up


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, kaiming: bool) -> nn.Sequential:
    """MoCo v2's head, fc-ReLU-fc with biases and no norm. ``kaiming``: DenseCL's init of its
    fc layers (He normal, fan-in, bias 0); otherwise PyTorch's, as torchvision's ``fc``."""
    head = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
    if kaiming:
        for layer in (head[0], head[2]):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return head


def _dense_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """DenseCL's dense head: 1x1 conv-ReLU-1x1 conv, PyTorch's init (as DenseCL leaves it)."""
    return nn.Sequential(nn.Conv2d(in_dim, hidden_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, 1))


class ContrastiveEncoder(nn.Module):
    """A backbone's bottom-up network with a global (and optionally a dense) projection head
    on its last stage (the output feature of the largest stride: ``res5`` for ResNets)."""

    def __init__(self, backbone: nn.Module, embed_dim: int, hidden_dim: int, dense: bool, kaiming_heads: bool):
        """
        Args:
            backbone: the detector's backbone as the config builds it; an FPN contributes its
                ``bottom_up`` only.
            embed_dim, hidden_dim: the heads' output and hidden widths.
            dense: add DenseCL's dense head.
            kaiming_heads: DenseCL's init of the global head (else MoCo's, PyTorch's default).
        """
        super().__init__()
        network = bottom_up(backbone)
        self.backbone = _BottomUpPath(network) if network is not backbone else backbone
        shapes = self.network.output_shape()
        self.feature = max(shapes, key=lambda name: shapes[name].stride)
        channels = shapes[self.feature].channels
        self.global_head = _mlp(channels, hidden_dim, embed_dim, kaiming_heads)
        self.dense_head = _dense_mlp(channels, hidden_dim, embed_dim) if dense else None

    @property
    def network(self) -> nn.Module:
        """The network the views go through (an FPN's bottom-up, else the backbone)."""
        return bottom_up(self.backbone)

    def last_stage(self, images: torch.Tensor, modality: Optional[str] = None) -> torch.Tensor:
        """The last stage's map of normalised ``images``. With ``modality``, the images show that
        modality alone (the caller zeroed the other's channels); a two-stream backbone then runs
        that modality's stream only."""
        if modality is not None and isinstance(self.network, HalfwayFusionResNet):
            return self.network(images, modality=modality)[self.feature]
        return self.network(images)[self.feature]

    def forward(self, images: torch.Tensor, modality: Optional[str] = None) -> EncoderOutput:
        features = self.last_stage(images, modality)
        embedding = F.normalize(self.global_head(features.mean(dim=(2, 3))).float(), dim=1)
        if self.dense_head is None:
            return EncoderOutput(embedding)
        dense = self.dense_head(features).flatten(2).float()  # N x D x S
        return EncoderOutput(
            embedding,
            dense=F.normalize(dense, dim=1),
            dense_pooled=F.normalize(dense.mean(dim=2), dim=1),
            features=features.flatten(2),
        )


def unreachable_parameters(network: nn.Module, feature: str, channels: int) -> List[str]:
    """Trainable parameters of ``network`` that its output ``feature`` does not depend on.

    An FPN reads several stages, and some modules only feed the FPN's other inputs: the 1x1
    fusion conv at ``res2`` of the halfway-fusion backbone, for one. No image-domain loss
    reaches them; they are found by one backward of a small random input (eval mode, so no
    norm statistics move) and frozen, so that DDP does not wait for their gradients.
    """
    trainable = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    if not trainable:
        return []
    was_training = network.training
    network.eval()
    try:
        device = trainable[0][1].device
        out = network(torch.randn(1, channels, 64, 64, device=device))[feature]
        grads = torch.autograd.grad(out.sum(), [p for _, p in trainable], allow_unused=True)
    finally:
        network.train(was_training)
    return [name for (name, _), grad in zip(trainable, grads) if grad is None]
