"""The contrastive pieces of image-domain pre-training (MoCo v2, DenseCL): queues of keys,
InfoNCE against a queue, DenseCL's location matching, and the cross-rank collectives.

Written for detpre rather than taken from a library (docs/image_domain_ssl.md says why):
the queue must be a buffer saved with the weights, so that a resumed run continues with the
very keys it had, and a batch must fill whole queue slots (MoCo's ``K % batch == 0``), never
dropping keys silently.

Box-level InfoNCE (:mod:`.box_contrastive_loss`) is a different loss: its negatives are
the other boxes of the batch and its positives grouped by proposal identity; MoCo's has one
positive per query and the queue as negatives. What both share, the collapse diagnostic
(:func:`~.box_contrastive_loss.embedding_spread`), is imported from there.
"""

from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

__all__ = [
    "KeyQueue",
    "gather_across_ranks",
    "match_locations",
    "queue_info_nce",
    "shuffle_across_ranks",
    "unshuffle_across_ranks",
]


class KeyQueue(nn.Module):
    """A FIFO of ``size`` L2-normalised keys of ``dim`` values, MoCo's negatives.

    ``start`` "random": the queue starts as random unit vectors, all of them negatives from
    the first step (MoCo's and DenseCL's queues). "empty": only keys of past batches are
    negatives, the queue growing until it is full. ``filled`` counts the slots holding real
    keys (the ``queue_fill`` health signal). All three tensors are buffers: saved in
    checkpoints, restored at resume.
    """

    STARTS = ("random", "empty")

    def __init__(self, size: int, dim: int, start: str = "random"):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(
                f"A key queue needs a positive size and dimension: MODEL.IMAGE_DOMAIN.QUEUE_SIZE is {size}, "
                f"EMBED_DIM {dim}."
            )
        if start not in self.STARTS:
            raise ValueError(f"MODEL.IMAGE_DOMAIN.QUEUE_START {start!r} is not one of {self.STARTS}.")
        self.start = start
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def fill(self) -> float:
        """Fraction of the slots that hold keys of past batches (the rest: the random start)."""
        return int(self.filled) / self.size

    def negatives(self) -> torch.Tensor:
        """The negatives of this batch: every slot, or (``start`` "empty") the filled ones, which
        are the first ``filled`` until the queue is full. A copy, since the batch's keys enter the
        queue before the backward pass that still needs them (MoCo's ``queue.clone().detach()``)."""
        keys = self.keys if self.start == "random" else self.keys[: int(self.filled)]
        return keys.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` keys (gathered from every rank) by ``keys``."""
        batch = keys.shape[0]
        if self.size % batch:
            raise ValueError(
                f"MODEL.IMAGE_DOMAIN.QUEUE_SIZE ({self.size}) must be a multiple of the global batch ({batch} "
                "images a step, all ranks together), so that every batch fills whole queue slots (as MoCo)."
            )
        start = int(self.ptr)
        self.keys[start : start + batch] = keys.detach().to(self.keys.dtype)
        self.ptr.fill_((start + batch) % self.size)
        self.filled.fill_(min(int(self.filled) + batch, self.size))


def queue_info_nce(
    query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """MoCo's InfoNCE: cross-entropy of ``[q.k, q.n_1, ..., q.n_K] / T`` with label 0.

    Args:
        query: N x D L2-normalised queries (receive gradient).
        key: N x D L2-normalised positive keys, row i for query i (no gradient).
        negatives: K x D L2-normalised negatives (the queue, taken before this batch enters it;
            K may be 0).
        temperature: the T above.

    Returns:
        ``(loss, stats)``, the loss averaged over the N queries; ``stats`` (no gradient):
        ``positive_cosine`` and ``negative_cosine`` (mean similarities; the latter only with
        negatives) and ``top1``, the fraction of queries whose positive scores above every
        negative (MoCo's "acc1").
    """
    positive = (query * key.detach()).sum(dim=1, keepdim=True)  # N x 1
    negative = query @ negatives.detach().T  # N x K
    logits = torch.cat([positive, negative], dim=1) / temperature
    loss = F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.int64, device=query.device))
    with torch.no_grad():
        stats = {"positive_cosine": positive.mean(), "top1": (logits.argmax(dim=1) == 0).float().mean()}
        if negative.numel():
            stats["negative_cosine"] = negative.mean()
    return loss, stats


@torch.no_grad()
def match_locations(query_features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
    """DenseCL's correspondence: for every query location, the key location whose *backbone*
    feature is the most cosine-similar. ``N x C x S`` each; returns ``N x S`` indices."""
    q = F.normalize(query_features.float(), dim=1)
    k = F.normalize(key_features.float(), dim=1)
    return torch.bmm(q.transpose(1, 2), k).argmax(dim=2)


# ----------------------------------------------------------------- across ranks


@torch.no_grad()
def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, in rank order (itself in one process).
    Keys are gathered before they are enqueued, so every rank keeps the same queue."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return tensor
    parts: List[torch.Tensor] = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def broadcast_from_rank0(tensors: List[torch.Tensor]) -> None:
    """Every rank's ``tensors`` made rank 0's, in place (nothing in one process).

    Detectron2 wraps models with ``broadcast_buffers=False``, so DDP does not sync buffers as it
    does in MoCo (whose random queue start is rank 0's): queues drawn at build time, on ranks
    seeded apart, must be made equal once, before the first step uses them as negatives."""
    if comm.get_world_size() == 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


@torch.no_grad()
def shuffle_across_ranks(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffle BN, first half: this rank's share of the global batch in a random order
    shared by all ranks, and that order (to undo it). Identity in one process."""
    if comm.get_world_size() == 1:
        return images, torch.arange(len(images), device=images.device)
    gathered = gather_across_ranks(images)
    order = torch.randperm(len(gathered), device=images.device)
    dist.broadcast(order, src=0)
    return gathered[order.view(comm.get_world_size(), -1)[comm.get_rank()]], order


@torch.no_grad()
def unshuffle_across_ranks(outputs: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The second half: the outputs of this rank's own images, back in their original order."""
    if comm.get_world_size() == 1:
        return outputs
    gathered = gather_across_ranks(outputs)
    restore = torch.argsort(order)
    return gathered[restore.view(comm.get_world_size(), -1)[comm.get_rank()]]
