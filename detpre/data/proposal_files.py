"""Selective-search proposal files of registered datasets, resumable (``tools/precompute_proposals.py``).

The file holds ``ids``, ``boxes`` (XYXY_ABS, original image pixels), ``objectness_logits``
(the selective-search rank) and ``bbox_mode``, which is what Detectron2 reads from
``DATASETS.PROPOSAL_FILES_TRAIN`` when ``MODEL.LOAD_PROPOSALS`` is on: the boxes land in
each dataset dict as ``proposal_boxes``, next to (and never mixed with) its annotations,
for ``TwoViewDatasetMapper`` and ``BoxDomainPretrainer`` (configs/AlignDet).

Resumable: each finished image is appended to ``<output>.partial``; a restarted run with
the same settings skips those images, and the journal is removed once the file is written.
"""

import logging
import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import tqdm
from detectron2.structures import BoxMode

from ..utils.file_io import WriteError, atomic_write
from .image_io import read_image
from .multispectral import LWIR, VISIBLE, frame_file
from .proposals import ProposalFilter, merge_ranked, rank_logits, selective_search

__all__ = ["MODALITIES", "SearchSettings", "compute_proposals", "ground_truth_boxes", "search_image"]

logger = logging.getLogger(__name__)

#: The frames of an image that are searched: one modality, or both (their boxes merged).
MODALITIES = (VISIBLE, LWIR, "both")


@dataclass(frozen=True)
class SearchSettings:
    """Everything a proposal file is a function of (checked when a journal is resumed)."""

    modality: str = "visible"
    max_size: int = 500
    fast: bool = True
    filter: ProposalFilter = ProposalFilter()

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"modality {self.modality!r} is not one of {MODALITIES}.")
        if self.max_size < 32:
            raise ValueError(f"max_size={self.max_size} is too small for selective search (>= 32).")


def image_files(record: Dict[str, Any], modality: str) -> List[str]:
    """The frame(s) of a dataset dict that ``modality`` searches."""
    return [frame_file(record, m) for m in ((VISIBLE, LWIR) if modality == "both" else (modality,))]


def search_image(files: Sequence[str], settings: SearchSettings) -> np.ndarray:
    """The filtered proposals of one image (its frames searched separately, then merged)."""
    ranked, shape = [], None
    for path in files:
        image = read_image(path, cv2.IMREAD_COLOR)
        if shape is not None and image.shape[:2] != shape:
            raise ValueError(f"Frames of one image differ in size: {files} ({shape} vs {image.shape[:2]}).")
        shape = image.shape[:2]
        ranked.append(selective_search(image, settings.max_size, settings.fast))
    return settings.filter(merge_ranked(ranked), shape)


def _init_worker() -> None:
    # One process per core already: threads inside each would only oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _search_task(task: Tuple[Any, List[str], SearchSettings]) -> Tuple[Any, np.ndarray]:
    image_id, files, settings = task
    return image_id, search_image(files, settings)


def read_journal(path: str, settings: SearchSettings) -> Dict[Any, np.ndarray]:
    """Images finished by an earlier run; a torn last record (killed mid-write) is cut off."""
    done: Dict[Any, np.ndarray] = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb+") as f:
        try:
            header = pickle.load(f)
        except Exception:  # noqa: BLE001  (a header torn by a kill: nothing was journaled)
            f.truncate(0)
            return done
        if header != {"settings": asdict(settings)}:
            raise ValueError(
                f"{path} was written with other settings ({header}); delete it or rerun with "
                f"those settings (now: {asdict(settings)})."
            )
        good = f.tell()
        while True:
            try:
                image_id, boxes = pickle.load(f)
            except Exception:  # noqa: BLE001  (end of file, or the torn record of a kill)
                break
            done[image_id] = boxes
            good = f.tell()
        f.truncate(good)
    return done


class _JournalFile:
    """The journal, open for appending: a failed write is a WriteError naming it."""

    def __init__(self, f, path: str):
        self._file, self._path = f, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def tell(self) -> int:
        return self._file.tell()

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            raise WriteError(self._path, e) from e

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise WriteError(self._path, e) from e


def compute_proposals(
    dicts: Sequence[Dict[str, Any]], output: str, settings: SearchSettings, workers: int = 1
) -> Dict[str, Any]:
    """Search every image of ``dicts`` (skipping those journaled), write ``output``, return it."""
    ids = [d["image_id"] for d in dicts]
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("Dataset image_ids are not unique: a proposal file is keyed by image_id.")
    journal = output + ".partial"
    done = read_journal(journal, settings)
    todo = [(d["image_id"], image_files(d, settings.modality), settings) for d in dicts if d["image_id"] not in done]
    logger.info("%d images, %d already done (%s), %d to search.", len(ids), len(done), journal, len(todo))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        journal_file = open(journal, "ab")
    except OSError as e:
        raise WriteError(journal, e) from e
    with _JournalFile(journal_file, journal) as f:
        if f.tell() == 0:
            pickle.dump({"settings": asdict(settings)}, f)
        results: Iterable[Tuple[Any, np.ndarray]]
        # "spawn": forked children inherit OpenCV's and torch's thread pools and can deadlock in
        # them. An executor, not a multiprocessing.Pool: a worker that dies (out of memory,
        # killed) fails the run with BrokenProcessPool instead of hanging it; the journal keeps
        # what was finished.
        executor = None
        if workers > 1:
            executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
        try:
            if executor is not None:
                results = (job.result() for job in as_completed([executor.submit(_search_task, t) for t in todo]))
            else:
                results = map(_search_task, todo)
            for image_id, boxes in tqdm.tqdm(results, total=len(ids), initial=len(done), desc="selective search"):
                pickle.dump((image_id, boxes), f)
                f.flush()
                done[image_id] = boxes
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
    boxes = [done[i] for i in ids]
    proposals = {
        "ids": ids,
        "boxes": boxes,
        "objectness_logits": [rank_logits(len(b)) for b in boxes],
        "bbox_mode": BoxMode.XYXY_ABS.value,
        "selective_search": asdict(settings),
    }
    with atomic_write(output, "wb") as f:
        pickle.dump(proposals, f)
    os.unlink(journal)
    return proposals


def ground_truth_boxes(record: Dict[str, Any]) -> Optional[np.ndarray]:
    """The non-crowd annotated boxes of a dataset dict as XYXY_ABS, None if it has no annotations."""
    if "annotations" not in record:
        return None
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
