"""The box-level InfoNCE loss against hand-computed values and a per-identity reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from detpre.modeling.meta_arch.box_contrastive_loss import box_contrastive_loss, embedding_spread


def test_hand_computed_single_pair_with_one_negative():
    # q (id 0) = k (id 0) = (1, 0); one other query (id 1) = (0, 1) is the only negative.
    # cos(q, k) = 1, cos(q, n) = 0, T = 0.5: loss = -log(e^2 / (e^2 + e^0)) = log(1 + e^-2).
    query = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)  # norms do not matter
    loss, stats = box_contrastive_loss(query, torch.tensor([0, 1]), torch.tensor([[5.0, 0.0]]), torch.tensor([0]), 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)  # 0.126928
    assert stats["num_pairs"].item() == 1 and stats["num_identities"].item() == 1
    assert stats["positive_similarity"].item() == pytest.approx(1.0)
    loss.backward()
    # The query of id 1 has no key: it is only a (detached) negative and gets no gradient.
    assert torch.count_nonzero(query.grad[1]) == 0
    assert torch.count_nonzero(query.grad[0]) > 0


def test_hand_computed_two_identities():
    # Queries: a (id 0) = (1, 0), b (id 1) = (0, 1). Keys: c (id 0) = (1, 0), d (id 1) = (1, 0).
    # T = 1. For a: positive c (cos 1); negatives b (0) and d (1): -log(e / (e + 1 + e)).
    # For b: positive d (cos 0); negatives a (0) and c (0): -log(1 / 3) = log 3.
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    key = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, _ = box_contrastive_loss(query, torch.tensor([0, 1]), key, torch.tensor([0, 1]), 1.0)
    e = math.e
    expected = (-math.log(e / (2 * e + 1)) + math.log(3)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def _reference(query, query_ids, key, key_ids, temperature):
    """AlignDet's structure, written as loops: per identity, the mean over its (query, key)
    pairs of the cross-entropy against that query's negatives; then the mean over identities."""
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    per_id = []
    for ident in sorted(set(query_ids.tolist())):
        qs = [i for i in range(len(q)) if query_ids[i] == ident]
        ks = [j for j in range(len(k)) if key_ids[j] == ident]
        if not ks:
            continue
        negs = torch.cat([q[query_ids != ident], k[key_ids != ident]])
        losses = []
        for i in qs:
            for j in ks:
                logits = torch.cat([(q[i] @ k[j]).view(1), negs @ q[i]]) / temperature
                losses.append(-F.log_softmax(logits, dim=0)[0])
        per_id.append(torch.stack(losses).mean())
    return torch.stack(per_id).mean()


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_per_identity_reference(seed):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(23, 8, generator=g)
    key = torch.randn(17, 8, generator=g)
    query_ids = torch.randint(0, 7, (23,), generator=g)
    key_ids = torch.randint(2, 9, (17,), generator=g)  # some identities only on one side
    loss, stats = box_contrastive_loss(query, query_ids, key, key_ids, 0.5)
    assert loss.item() == pytest.approx(_reference(query, query_ids, key, key_ids, 0.5).item(), rel=1e-5)
    expected_pairs = sum(int((key_ids == i).sum()) for i in query_ids.tolist())
    assert stats["num_pairs"].item() == expected_pairs


def test_no_positive_pair_gives_a_zero_loss_that_still_backpropagates():
    query = torch.randn(4, 3, requires_grad=True)
    loss, stats = box_contrastive_loss(query, torch.arange(4), torch.randn(2, 3), torch.tensor([9, 10]), 0.5)
    assert loss.item() == 0.0 and stats["num_identities"].item() == 0
    loss.backward()
    assert torch.equal(query.grad, torch.zeros_like(query))
    with pytest.raises(ValueError, match="temperature"):
        box_contrastive_loss(query, torch.arange(4), query, torch.arange(4), 0.0)


def test_a_lone_positive_pair_has_zero_loss_and_finite_gradient():
    query = torch.randn(1, 3, requires_grad=True)
    loss, _ = box_contrastive_loss(query, torch.tensor([0]), torch.randn(1, 3), torch.tensor([0]), 0.5)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(query.grad).all()


def test_embedding_spread_detects_collapse():
    g = torch.Generator().manual_seed(0)
    spread = embedding_spread(torch.randn(4096, 64, generator=g))
    assert spread.item() == pytest.approx(1.0, abs=0.05)
    collapsed = torch.ones(100, 64) + 1e-4 * torch.randn(100, 64, generator=g)
    assert embedding_spread(collapsed).item() < 0.01


def test_background_embeddings_are_negatives_only():
    """Sampled background boxes (identity < 0, AlignDet's RetinaNet / HTC samplers): never a
    positive, not even of each other across the views, always a negative of every query."""
    g = torch.Generator().manual_seed(0)
    query, key = torch.randn(6, 8, generator=g), torch.randn(5, 8, generator=g)
    query_ids = torch.tensor([0, 0, 1, -1, -1, 2])
    key_ids = torch.tensor([0, 1, -1, -1, 3])
    loss, stats = box_contrastive_loss(query, query_ids, key, key_ids, 0.5)
    assert stats["num_identities"].item() == 2 and stats["num_pairs"].item() == 3  # ids 0 (2 x 1) and 1
    # The reference with background as identities no query shares (each view its own).
    distinct = torch.where(key_ids < 0, torch.tensor(-2), key_ids)
    reference = _reference(query, query_ids, key, distinct, 0.5)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    # Without the background the loss changes: they were negatives.
    kept_q, kept_k = query_ids >= 0, key_ids >= 0
    without, _ = box_contrastive_loss(query[kept_q], query_ids[kept_q], key[kept_k], key_ids[kept_k], 0.5)
    assert without.item() < loss.item()
