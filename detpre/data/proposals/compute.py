"""Proposals of a registered dataset's images, reproducible, parallel, resumable, sharded.

:class:`SearchSettings` is everything a proposal file is a function of (generator, search
size, frames, filter, and :data:`PROPOSALS_VERSION`); it is stored in the file and checked
when a journal or shards are resumed or merged. Every image is searched on its own (no
state crosses images), with generators whose output order is a function of the pixels, so
the same images and settings give the same file, byte for byte, for any ``workers``, any
sharding and any order in which workers finish (``tests/data/test_proposals.py``).

The filter sees each image's boxes in the pixels of the searched copy (see
:func:`.generators.generate`'s ``search_size``); the file holds them in the image's pixels.
For multispectral datasets (``lwir_file_name``) ``modality`` picks the searched frame:
``visible``, ``lwir``, or ``both`` (each frame searched, their box lists interleaved by
position, then filtered together, so that NMS removes the boxes both found).
"""

import logging
import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import tqdm

from ...utils.file_io import atomic_write
from ..image_io import read_image
from ..multispectral import LWIR, VISIBLE, frame_file
from .filters import ProposalFilter
from .formats import write_proposal_file
from .generators import PROPOSAL_GENERATORS, generate, to_image_pixels
from .journal import JournalFile, read_journal, shard_block, shard_path

__all__ = [
    "MODALITIES",
    "PROPOSALS_VERSION",
    "SearchSettings",
    "compute_proposals",
    "merge_ranked",
    "merge_shards",
    "search_image",
]

logger = logging.getLogger(__name__)

#: Bumped whenever a generator, a filter or the file layout changes what a file holds.
PROPOSALS_VERSION = 2
#: The frames of an image that are searched: one modality, or both (their boxes merged).
MODALITIES = (VISIBLE, LWIR, "both")

#: One image's result: its boxes (N x 4 XYXY_ABS, in order) and its (height, width).
Result = Tuple[np.ndarray, Tuple[int, int]]


@dataclass(frozen=True)
class SearchSettings:
    """Everything a proposal file is a function of."""

    generator: str = "soco"
    #: 0: search each image at its own size (SoCo); else the longer side of the searched copy.
    search_size: int = 0
    modality: str = VISIBLE
    filter: ProposalFilter = field(default_factory=ProposalFilter)

    def __post_init__(self):
        if self.generator not in PROPOSAL_GENERATORS:
            raise ValueError(f"generator {self.generator!r} is not one of {sorted(PROPOSAL_GENERATORS)}.")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality {self.modality!r} is not one of {MODALITIES}.")
        if self.search_size != 0 and self.search_size < 32:
            raise ValueError(f"search_size={self.search_size} is too small for selective search (0 or >= 32).")

    def describe(self) -> Dict[str, Any]:
        """The settings as stored in files and journals."""
        return {"version": PROPOSALS_VERSION, **asdict(self)}


def merge_ranked(ranked: Sequence[np.ndarray]) -> np.ndarray:
    """Interleave several ordered box lists (the first of each, then the second, ...)."""
    ranked = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in ranked]
    longest = max((len(b) for b in ranked), default=0)
    rows: List[np.ndarray] = []
    for i in range(longest):
        rows.extend(b[i] for b in ranked if i < len(b))
    return np.stack(rows) if rows else np.zeros((0, 4), dtype=np.float32)


def image_files(record: Dict[str, Any], modality: str) -> List[str]:
    """The frame(s) of a dataset dict that ``modality`` searches."""
    return [frame_file(record, m) for m in ((VISIBLE, LWIR) if modality == "both" else (modality,))]


def search_image(files: Sequence[str], settings: SearchSettings) -> Result:
    """The filtered proposals of one image (its frames searched separately, then merged)."""
    ranked, shape, searched = [], None, None
    for path in files:
        image = read_image(path, cv2.IMREAD_COLOR)
        if shape is not None and image.shape[:2] != shape:
            raise ValueError(f"Frames of one image differ in size: {files} ({shape} vs {image.shape[:2]}).")
        shape = image.shape[:2]
        boxes, searched = generate(settings.generator, image, settings.search_size)
        ranked.append(boxes)
    kept = settings.filter(merge_ranked(ranked), searched)
    return to_image_pixels(kept, searched, shape), (int(shape[0]), int(shape[1]))


def _init_worker() -> None:
    # One process per core already: threads inside each would only oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _search_task(task: Tuple[Any, List[str], SearchSettings]) -> Tuple[Any, Result]:
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
    todo = [(d["image_id"], image_files(d, settings.modality), settings) for d in dicts if d["image_id"] not in done]
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
