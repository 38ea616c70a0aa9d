"""A training data loader that can resume exactly where a killed run stopped.

Detectron2's training loader is an infinite stream seeded once at start-up: after
``--resume`` it starts the stream again from the beginning, and the augmentation RNG of
its workers restarts too, so a resumed run sees other images in another order than the
run that was killed. For multi-day schedules on preemptible machines that makes a resumed
run a different experiment.

Here the batches are a pure function of (seed, rank, batch index):

* the sample stream is a concatenation of per-epoch permutations seeded by (seed, epoch),
  sharded over ranks as Detectron2's ``TrainingSampler`` does (rank r takes every W-th);
* aspect-ratio grouping is decided from the dataset dicts' width/height *before* mapping,
  so the sequence of index batches can be replayed without loading any image;
* batch k is mapped by worker ``k % num_workers`` with every RNG (random, NumPy, torch)
  seeded from (seed, rank, k), and torch's DataLoader returns worker outputs round-robin,
  so the batch order does not depend on the number of workers.

Resuming at iteration i therefore yields exactly the batches i, i+1, ... of the
uninterrupted run.
"""

import hashlib
import itertools
import logging
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.config import CfgNode
from detectron2.data import DatasetFromList, DatasetMapper, get_detection_dataset_dicts
from detectron2.data.build import filter_images_with_only_crowd_annotations, trivial_batch_collator
from detectron2.utils import comm

from .annotation_checks import check_dataset_dicts
from .proposals.formats import load_proposals_into_dicts

logger = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers, stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class BatchPlan:
    """The deterministic sequence of index batches of one rank."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        horizontal: Optional[Sequence[bool]] = None,
    ):
        """
        Args:
            horizontal: per sample, whether width > height; when given, batches only hold
                samples of one orientation (Detectron2's aspect-ratio grouping).
        """
        if num_samples <= 0:
            raise ValueError("Cannot build a training loader over an empty dataset.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.horizontal = None if horizontal is None else np.asarray(horizontal, dtype=bool)

    def _indices(self) -> Iterator[int]:
        """This rank's share of the infinite stream of per-epoch permutations."""
        stream = itertools.chain.from_iterable(
            np.random.default_rng([self.seed, epoch]).permutation(self.num_samples).tolist()
            for epoch in itertools.count()
        )
        return itertools.islice(stream, self.rank, None, self.world_size)

    def batches(self, start: int = 0) -> Iterator[List[int]]:
        """Index batches number ``start``, ``start + 1``, ... (replayed cheaply, no images)."""
        indices = self._indices()
        if self.horizontal is None:
            # Without grouping, batch k is simply the k-th chunk of the stream.
            indices = itertools.islice(indices, start * self.batch_size, None)
            while True:
                yield list(itertools.islice(indices, self.batch_size))
        buckets: List[List[int]] = [[], []]
        emitted = 0
        for index in indices:
            bucket = buckets[0 if self.horizontal[index] else 1]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                if emitted >= start:
                    yield batch
                emitted += 1


class _PlannedBatches(torchdata.IterableDataset):
    """Maps the planned batches, each worker taking every ``num_workers``-th batch."""

    def __init__(self, dataset: DatasetFromList, mapper: Callable, plan: BatchPlan, start: int):
        self.dataset = dataset
        self.mapper = mapper
        self.plan = plan
        self.start = start

    def __iter__(self):
        info = torchdata.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        for k, indices in enumerate(self.plan.batches(self.start)):
            if k % num_workers != worker:
                continue
            seed = derive_seed(self.plan.seed, self.plan.rank, self.start + k)
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            batch = [self.mapper(self.dataset[i]) for i in indices]
            # A mapper may reject a sample (returns None), as Detectron2's allow.
            yield [d for d in batch if d is not None]


class ResumableTrainLoader:
    """An iterable of training batches whose start can be moved after a checkpoint loads.

    The trainer builds the loader before it knows the iteration it resumes from; it calls
    :meth:`set_start_iter` after loading, and the stream starts there when first iterated.
    """

    def __init__(self, dataset: DatasetFromList, mapper: Callable, plan: BatchPlan, num_workers: int):
        self.dataset = dataset
        self.mapper = mapper
        self.plan = plan
        self.num_workers = num_workers
        self.start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        self.start_iter = start_iter

    def __iter__(self):
        loader = torchdata.DataLoader(
            _PlannedBatches(self.dataset, self.mapper, self.plan, self.start_iter),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
            persistent_workers=False,
            # With workers, DataLoader draws their base seed when the iterator is created. From
            # the global RNG that draw would happen at iteration 0 in one run and at the resumed
            # iteration in the other, shifting the model's sampling there; this generator keeps
            # the global RNG untouched (each batch is re-seeded anyway).
            generator=torch.Generator().manual_seed(derive_seed(self.plan.seed, self.plan.rank)),
        )
        return iter(loader)


def train_dataset_dicts(cfg: CfgNode) -> List[Dict[str, Any]]:
    """The training dicts of ``cfg``, as Detectron2 loads them, with unusable boxes named or
    skipped (:mod:`detpre.data.annotation_checks`) before empty images are filtered."""
    names = cfg.DATASETS.TRAIN
    min_keypoints = cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
    if cfg.MODEL.LOAD_PROPOSALS:
        # Per dataset, by detpre's loader: Detectron2's pickle or AlignDet's COCO json.
        files = cfg.DATASETS.PROPOSAL_FILES_TRAIN
        if len(files) != len(names):
            raise ValueError(
                f"DATASETS.PROPOSAL_FILES_TRAIN has {len(files)} files for the {len(names)} datasets of "
                f"DATASETS.TRAIN {tuple(names)}: one proposal file per dataset."
            )
        dicts = [
            d
            for name, path in zip(names, files)
            for d in load_proposals_into_dicts(
                get_detection_dataset_dicts(name, filter_empty=False, min_keypoints=min_keypoints), path
            )
        ]
        if cfg.DATALOADER.FILTER_EMPTY_PROPOSALS:
            kept = [d for d in dicts if len(d["proposal_boxes"])]
            logger.info("Removed %d images without proposals. %d images left.", len(dicts) - len(kept), len(kept))
            dicts = kept
    else:
        dicts = get_detection_dataset_dicts(names, filter_empty=False, min_keypoints=min_keypoints)
    dicts = check_dataset_dicts(dicts, names)
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    return dicts


def build_resumable_train_loader(cfg: CfgNode, mapper: Optional[Callable] = None) -> ResumableTrainLoader:
    """Build the training loader of ``cfg`` (same datasets, filtering and batch as Detectron2's)."""
    dicts = train_dataset_dicts(cfg)
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by the number "
            f"of processes ({world_size})."
        )
    horizontal = None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        horizontal = [d["width"] > d["height"] for d in dicts]
    # All ranks must draw the same permutations: the seed is shared, never per-rank random.
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    plan = BatchPlan(
        len(dicts),
        cfg.SOLVER.IMS_PER_BATCH // world_size,
        seed,
        rank=comm.get_rank(),
        world_size=world_size,
        horizontal=horizontal,
    )
    dataset = DatasetFromList(dicts, copy=True, serialize=True)
    return ResumableTrainLoader(dataset, mapper or DatasetMapper(cfg, True), plan, cfg.DATALOADER.NUM_WORKERS)
