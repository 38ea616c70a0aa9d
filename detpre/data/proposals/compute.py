"""Proposals of a registered dataset's images, reproducible, parallel, resumable, sharded.

:class:`SearchSettings` is everything a proposal file is a function of (generator, search
size, frames, filter, and :data:`PROPOSALS_VERSION`); it is stored in the file and checked
when a journal or shards are resumed or merged. Every image is searched on its own (no
state crosses images), with generators whose output order is a function of the pixels, so
the same images and settings give the same file, byte for byte, for any ``workers``, any
sharding and any order in which workers finish (``tests/data/test_proposals.py``).

The filter sees each image's boxes in the pixels of the searched copy (see
:func:`.generators.generate`'s ``search_size``); the file holds them in the image's pixels.

**Sources.** ``generator`` is a source spec (:mod:`.sources`): one generator on the frame(s)
of ``modality``, a registered union (``kaist_thermal``) or ``NAME[@FRAME]`` parts joined by
``+``. Their boxes are fused by :meth:`.filters.ProposalFilter.fuse` (each source's boxes
that pass the rules, interleaved by rank, one NMS), so that NMS removes the boxes several
sources found. The settings stored in a file name the expanded sources too, so that a file
says what ran even if a union is later registered otherwise.

A config gives the settings as ``DATASETS.PROPOSAL_SEARCH`` (:func:`settings_from_cfg`), so
that a box-domain pre-training config names both its proposal file and how it is made.
"""

import logging
import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import tqdm

from ...utils.file_io import atomic_write
from ..image_io import read_image
from ..multispectral import LWIR, VISIBLE, frame_file
from .filters import ProposalFilter, filter_preset
from .formats import write_proposal_file
from .generators import generate, to_image_pixels
from .journal import JournalFile, read_journal, shard_block, shard_path
from .sources import parse_sources

__all__ = [
    "PROPOSALS_VERSION",
    "SearchSettings",
    "compute_proposals",
    "merge_shards",
    "search_image",
    "settings_from_cfg",
]

logger = logging.getLogger(__name__)

#: Bumped whenever a generator, a filter or the file layout changes what a file holds
#: (3: thermal generators, unions; the rules apply to each source before the interleave).
PROPOSALS_VERSION = 3

#: One image's result: its boxes (N x 4 XYXY_ABS, in order) and its (height, width).
Result = Tuple[np.ndarray, Tuple[int, int]]


@dataclass(frozen=True)
class SearchSettings:
    """Everything a proposal file is a function of."""

    #: A source spec: a generator, a registered union, or ``NAME[@FRAME]+...`` (:mod:`.sources`).
    generator: str = "soco"
    #: 0: search each image at its own size (SoCo); else the longer side of the searched copy.
    search_size: int = 0
    #: The frame of the sources that name none: ``visible``, ``lwir`` or ``both``.
    modality: str = VISIBLE
    filter: ProposalFilter = field(default_factory=ProposalFilter)

    def __post_init__(self):
        parse_sources(self.generator, self.modality)  # a ValueError naming what is wrong
        if self.search_size != 0 and self.search_size < 32:
            raise ValueError(f"search_size={self.search_size} is too small for selective search (0 or >= 32).")

    @property
    def sources(self) -> Tuple[Tuple[str, str], ...]:
        """The ``(generator, frame)`` pairs searched, in the order their boxes are interleaved."""
        return parse_sources(self.generator, self.modality)

    def describe(self) -> Dict[str, Any]:
        """The settings as stored in files and journals (with the expanded sources)."""
        sources = [f"{name}@{frame}" for name, frame in self.sources]
        return {"version": PROPOSALS_VERSION, **asdict(self), "sources": sources}


def settings_from_cfg(cfg: Any) -> SearchSettings:
    """The :class:`SearchSettings` of a config's ``DATASETS.PROPOSAL_SEARCH`` (GENERATOR,
    MODALITY, PRESET, SIZE; ``detpre/config/defaults.py``); a ValueError names the key."""
    node = cfg.DATASETS.PROPOSAL_SEARCH
    try:
        preset = filter_preset(node.PRESET)
    except KeyError as e:
        raise ValueError(f"DATASETS.PROPOSAL_SEARCH.PRESET: {e.args[0]}") from None
    try:
        return SearchSettings(generator=node.GENERATOR, search_size=node.SIZE, modality=node.MODALITY, filter=preset)
    except ValueError as e:
        keys = f"GENERATOR={node.GENERATOR!r}, MODALITY={node.MODALITY!r}, SIZE={node.SIZE!r}"
        raise ValueError(f"DATASETS.PROPOSAL_SEARCH ({keys}): {e}") from None


def image_files(record: Dict[str, Any], settings: SearchSettings) -> Dict[str, str]:
    """``{frame: file}`` of a dataset dict, for the frames ``settings``' sources search."""
    frames = {frame for _, frame in settings.sources}
    return {m: frame_file(record, m) for m in (VISIBLE, LWIR) if m in frames}


def search_image(files: Mapping[str, str], settings: SearchSettings) -> Result:
    """The filtered proposals of one image (``files``: ``{frame: file}``): each source run on
    its frame, their boxes fused by the filter."""
    frames: Dict[str, np.ndarray] = {}
    shape = None
    for modality, path in files.items():
        image = read_image(path, cv2.IMREAD_COLOR)
        if shape is not None and image.shape[:2] != shape:
            raise ValueError(f"Frames of one image differ in size: {dict(files)} ({shape} vs {image.shape[:2]}).")
        shape = image.shape[:2]
        frames[modality] = image
    ranked, searched = [], None
    for name, modality in settings.sources:
        boxes, searched = generate(name, frames[modality], settings.search_size)
        ranked.append(boxes)
    kept = settings.filter.fuse(ranked, searched)
    return to_image_pixels(kept, searched, shape), (int(shape[0]), int(shape[1]))


def _init_worker() -> None:
    # One process per core already: threads inside each would only oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _search_task(task: Tuple[Any, Dict[str, str], SearchSettings]) -> Tuple[Any, Result]:
    image_id, files, settings = task
    return image_id, search_image(files, settings)


def _search_all(
    dicts: Sequence[Dict[str, Any]], journal: str, settings: SearchSettings, workers: int
) -> Dict[Any, Result]:
    """Results of every image of ``dicts``, journaled as they finish, resumed from ``journal``."""
    ids = [d["image_id"] for d in dicts]
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("Dataset image_ids are not unique: a proposal file is keyed by image_id.")
    header = {"settings": settings.describe()}
    done = read_journal(journal, header)
    todo = [(d["image_id"], image_files(d, settings), settings) for d in dicts if d["image_id"] not in done]
    logger.info("%d images, %d already done (%s), %d to search.", len(ids), len(done), journal, len(todo))
    with JournalFile(journal, header) as f:
        results: Iterable[Tuple[Any, Result]]
        # "spawn": forked children inherit OpenCV's and torch's thread pools and can deadlock in
        # them. An executor, not a multiprocessing.Pool: a worker that dies (out of memory,
        # killed) fails the run with BrokenProcessPool instead of hanging it; the journal keeps
        # what was finished.
        executor = None
        if workers > 1 and todo:
            executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
        try:
            if executor is not None:
                results = (job.result() for job in as_completed([executor.submit(_search_task, t) for t in todo]))
            else:
                results = map(_search_task, todo)
            for image_id, result in tqdm.tqdm(results, total=len(ids), initial=len(done), desc="proposals"):
                f.append(image_id, result)
                done[image_id] = result
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        f.remove()
    return done


def _image_records(dicts: Sequence[Dict[str, Any]], results: Dict[Any, Result]) -> List[Dict[str, Any]]:
    return [
        {
            "image_id": d["image_id"],
            "file_name": d["file_name"],
            "height": results[d["image_id"]][1][0],
            "width": results[d["image_id"]][1][1],
        }
        for d in dicts
    ]


def compute_proposals(
    dicts: Sequence[Dict[str, Any]],
    output: str,
    settings: SearchSettings,
    workers: int = 1,
    shard: Optional[Tuple[int, int]] = None,
) -> str:
    """Search ``dicts`` (skipping journaled images) and write the proposal file ``output``
    (``.json``: AlignDet's COCO format; else Detectron2's pickle), or with ``shard=(i, N)``
    only block ``i`` of ``N`` into its shard file. Returns the path written."""
    if shard is not None:
        index, count = shard
        path = shard_path(output, index, count)
        block = shard_block(list(dicts), index, count)
        results = _search_all(block, path + ".partial", settings, workers)
        content = {
            "settings": settings.describe(),
            "shard": [index, count],
            "images": _image_records(block, results),
            "boxes": [results[d["image_id"]][0] for d in block],
        }
        with atomic_write(path, "wb") as f:
            pickle.dump(content, f, protocol=4)
        return path
    results = _search_all(dicts, output + ".partial", settings, workers)
    write_proposal_file(
        output, _image_records(dicts, results), [results[d["image_id"]][0] for d in dicts], settings.describe()
    )
    return output


def merge_shards(dicts: Sequence[Dict[str, Any]], output: str, settings: SearchSettings, count: int) -> str:
    """Write ``output`` from its ``count`` shard files, checking they were made with
    ``settings`` and cover exactly the images of ``dicts``, in order."""
    images: List[Dict[str, Any]] = []
    boxes: List[np.ndarray] = []
    missing = [shard_path(output, i, count) for i in range(count) if not os.path.isfile(shard_path(output, i, count))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {count} shard files are missing, e.g. {missing[0]} (run --shard).")
    for index in range(count):
        path = shard_path(output, index, count)
        with open(path, "rb") as f:
            content = pickle.load(f)
        if content["settings"] != settings.describe():
            raise ValueError(f"{path} was made with other settings ({content['settings']}, now {settings.describe()}).")
        expected = [d["image_id"] for d in shard_block(list(dicts), index, count)]
        if [i["image_id"] for i in content["images"]] != expected:
            raise ValueError(f"{path} does not hold block {index}/{count} of this dataset's images.")
        images.extend(content["images"])
        boxes.extend(content["boxes"])
    write_proposal_file(output, images, boxes, settings.describe())
    return output
