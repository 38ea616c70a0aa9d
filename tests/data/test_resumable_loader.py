"""The resumable training loader: batches are a function of (seed, rank, batch index)."""

import itertools

import numpy as np
import pytest
from detectron2.data import DatasetFromList

from detpre.data.build import BatchPlan, ResumableTrainLoader


def take(iterator, n):
    return list(itertools.islice(iterator, n))


@pytest.mark.parametrize("grouped", [False, True])
def test_resuming_replays_the_same_batches(grouped):
    horizontal = np.arange(37) % 3 == 0 if grouped else None
    plan = BatchPlan(37, 4, seed=5, horizontal=horizontal)
    uninterrupted = take(plan.batches(0), 50)
    assert take(plan.batches(23), 27) == uninterrupted[23:]


def test_every_epoch_is_a_permutation():
    plan = BatchPlan(12, 3, seed=0)
    first_epoch = sum(take(plan.batches(0), 4), [])
    assert sorted(first_epoch) == list(range(12))
    second_epoch = sum(take(plan.batches(4), 4), [])
    assert sorted(second_epoch) == list(range(12)) and second_epoch != first_epoch


def test_aspect_groups_never_mix():
    horizontal = np.arange(40) % 4 == 0
    for batch in take(BatchPlan(40, 5, seed=1, horizontal=horizontal).batches(), 30):
        assert len(batch) == 5 and len({bool(horizontal[i]) for i in batch}) == 1


def test_ranks_share_one_stream_without_overlap():
    plans = [BatchPlan(20, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    per_rank = [sum(take(p.batches(), 5), []) for p in plans]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(20))


def test_seed_changes_the_order():
    assert take(BatchPlan(30, 3, seed=0).batches(), 5) != take(BatchPlan(30, 3, seed=1).batches(), 5)


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="empty dataset"):
        BatchPlan(0, 2, seed=0)


def random_mapper(record):
    """A mapper with augmentation randomness, as Detectron2's are (np.random)."""
    return {"id": record["id"], "flip": bool(np.random.rand() < 0.5), "noise": float(np.random.rand())}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_output_is_independent_of_workers_and_resume(num_workers):
    dataset = DatasetFromList([{"id": i} for i in range(17)], copy=True, serialize=True)
    plan = BatchPlan(17, 3, seed=9)
    reference = take(iter(ResumableTrainLoader(dataset, random_mapper, plan, 0)), 12)
    loader = ResumableTrainLoader(dataset, random_mapper, plan, num_workers)
    assert take(iter(loader), 12) == reference
    loader.set_start_iter(7)
    assert take(iter(loader), 5) == reference[7:]
    assert [d["id"] for d in reference[0]] == take(plan.batches(), 1)[0]


def test_starting_the_loader_leaves_the_global_rng_alone():
    """The trainer seeds the global RNG per step; the loader, created lazily at the first
    step of a run (0, or the resumed one), must not draw from it."""
    import torch

    dataset = DatasetFromList([{"id": i} for i in range(5)], copy=True, serialize=True)
    loader = ResumableTrainLoader(dataset, random_mapper, BatchPlan(5, 2, seed=0), num_workers=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    iterator = iter(loader)
    next(iterator)
    assert torch.equal(torch.rand(3), expected)
