"""Box-level InfoNCE of AlignDet: the same proposal in two views is one positive pair.

Every online embedding (a RoI, or an anchor, of view 1) carries the identity of the
proposal it was assigned to; every momentum embedding (view 2) too. For a query ``q`` of
identity ``a``, each key ``k`` of identity ``a`` forms a pair whose loss is

    -log( exp(q.k / T) / (exp(q.k / T) + sum_n exp(q.n / T)) )

where ``n`` runs over the *negatives* of ``q``: all online and momentum embeddings of other
identities (from every image of the batch), detached as in AlignDet so that only the query
receives gradient. Embeddings are L2-normalised. Each identity's pairs are averaged, then
identities are averaged, so a large object with many RoIs counts as much as a small one.
Identities with no key (the proposal fell out of view 2, or no momentum RoI matched it)
have no positive and are skipped. A negative identity marks a sampled *background* box
(AlignDet's RetinaNet and HTC samplers): never a query's positive, always a negative of
every query.
"""

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["box_contrastive_loss", "embedding_spread"]


def box_contrastive_loss(
    query: torch.Tensor,
    query_ids: torch.Tensor,
    key: torch.Tensor,
    key_ids: torch.Tensor,
    temperature: float,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The loss above, and statistics for logging.

    Args:
        query: Q x D online embeddings (receive gradient).
        query_ids: Q proposal identities, unique across the images of the batch (< 0: background).
        key: K x D momentum embeddings (no gradient).
        key_ids: K identities, in the same numbering as ``query_ids``.
        temperature: the T above (AlignDet: 0.5).

    Returns:
        ``(loss, stats)``; ``stats`` holds ``num_pairs``, ``num_identities`` and
        ``positive_similarity`` (mean cosine of the positive pairs), all without gradient.
    """
    if temperature <= 0:
        raise ValueError(f"Contrastive temperature must be positive, got {temperature}.")
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    sim_qk = q @ k.T / temperature  # Q x K
    sim_qq = q @ q.detach().T / temperature  # Q x Q, the other queries as (detached) negatives
    positive = (query_ids[:, None] == key_ids[None, :]) & (query_ids[:, None] >= 0)
    same_query_id = query_ids[:, None] == query_ids[None, :]
    negatives = torch.cat(
        [sim_qk.masked_fill(positive, -math.inf), sim_qq.masked_fill(same_query_id, -math.inf)], dim=1
    )
    # A finite floor instead of -inf: a query without negatives must give a zero loss with
    # a zero (not NaN) gradient.
    negatives = negatives.clamp(min=torch.finfo(negatives.dtype).min)
    negative_lse = torch.logsumexp(negatives, dim=1, keepdim=True)  # Q x 1
    pair_loss = torch.logaddexp(sim_qk, negative_lse) - sim_qk  # Q x K

    keys_per_query = positive.sum(dim=1)
    has_key = keys_per_query > 0
    _, inverse, queries_per_id = torch.unique(query_ids, return_inverse=True, return_counts=True)
    num_ids = torch.unique(query_ids[has_key]).numel()
    num_pairs = positive.sum()
    stats = {
        "num_pairs": num_pairs.detach().float(),
        "num_identities": torch.tensor(float(num_ids), device=query.device),
        "positive_similarity": (sim_qk.detach()[positive].mean() * temperature)
        if num_pairs > 0
        else torch.tensor(0.0, device=query.device),
    }
    if num_ids == 0:
        return query.sum() * 0.0, stats
    # Weight of a pair: 1 / (pairs of its identity) / (identities).
    weight = 1.0 / (queries_per_id[inverse] * keys_per_query.clamp(min=1)).float() / num_ids
    loss = (pair_loss * positive * weight[:, None]).sum()
    return loss, stats


@torch.no_grad()
def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of L2-normalised embeddings, times sqrt(D): ~1 when they spread over
    the sphere, 0 when they collapse to one point (BYOL's collapse diagnostic)."""
    if len(embeddings) < 2:
        return torch.tensor(float("nan"), device=embeddings.device)
    z = F.normalize(embeddings.float(), dim=1)
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])
