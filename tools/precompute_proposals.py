#!/usr/bin/env python
"""Selective-search proposals of a registered dataset, written as a Detectron2 proposal file.

    python tools/precompute_proposals.py --dataset coco_2017_train \\
        --output datasets/proposals/coco_2017_train_ss.pkl --workers 16

The file holds ``ids``, ``boxes`` (XYXY_ABS, original image pixels), ``objectness_logits``
(the selective-search rank) and ``bbox_mode``, which is what Detectron2 reads from
``DATASETS.PROPOSAL_FILES_TRAIN`` when ``MODEL.LOAD_PROPOSALS`` is on: the boxes land in
each dataset dict as ``proposal_boxes``, next to (and never mixed with) its annotations,
for ``TwoViewDatasetMapper`` and ``BoxDomainPretrainer`` (configs/AlignDet). A proposal
file rather than a new annotation json, because it works for every registered dataset
(COCO subsets, KAIST) without re-registering anything, and because pre-training provably
never sees a ground-truth box.

Filtering is AlignDet's (``detpre.data.proposals.ProposalFilter``). ``--modality`` picks the
frame searched in multispectral datasets (``lwir_file_name``): ``visible``, ``lwir``, or
``both`` (the two ranked lists interleaved, then filtered together).

Resumable: each finished image is appended to ``<output>.partial``; a restarted run with
the same settings skips those images, and the journal is removed once the file is written.
When the dataset has annotations, the run ends by reporting how many ground-truth boxes
the proposals cover at IoU 0.5 (``--coverage-iou``).
"""
import argparse
import logging
import multiprocessing as mp
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

import detpre  # noqa: F401  (registers detpre's datasets)
from detpre.data.image_io import read_image
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposals import ProposalFilter, merge_ranked, proposal_coverage, rank_logits, selective_search
from detpre.utils.cli import cli_main
from detpre.utils.file_io import WriteError, atomic_write

logger = logging.getLogger("detpre.precompute_proposals")

MODALITIES = ("visible", "lwir", "both")


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
    keys = {"visible": ["file_name"], "lwir": ["lwir_file_name"], "both": ["file_name", "lwir_file_name"]}[modality]
    missing = [k for k in keys if k not in record]
    if missing:
        raise KeyError(
            f"Image {record.get('image_id')!r} has no {missing[0]!r}: modality {modality!r} needs a "
            "multispectral dataset (e.g. KAIST's, whose dicts carry lwir_file_name)."
        )
    return [record[k] for k in keys]


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


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. coco_2017_train")
    parser.add_argument("--output", required=True, help="the proposal file (.pkl) to write")
    parser.add_argument("--modality", default="visible", choices=MODALITIES)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--max-size", type=int, default=500, help="longer side of the searched copy")
    parser.add_argument("--quality", action="store_true", help="selective search's quality mode (slow)")
    default = ProposalFilter()
    parser.add_argument("--top-k", type=int, default=default.top_k)
    parser.add_argument("--max-aspect-ratio", type=float, default=default.max_aspect_ratio)
    parser.add_argument("--min-relative-size", type=float, default=default.min_relative_size)
    parser.add_argument("--max-relative-size", type=float, default=default.max_relative_size)
    parser.add_argument("--nms", type=float, default=default.nms_threshold)
    parser.add_argument("--coverage-iou", type=float, default=0.5)
    args = parser.parse_args(argv)
    ensure_subset_registered(args.dataset)  # subset names such as coco_2017_train_10pct_s0
    if args.dataset not in DatasetCatalog.list():
        parser.error(f"dataset {args.dataset!r} is not registered")
    settings = SearchSettings(
        modality=args.modality,
        max_size=args.max_size,
        fast=not args.quality,
        filter=ProposalFilter(
            max_aspect_ratio=args.max_aspect_ratio,
            min_relative_size=args.min_relative_size,
            max_relative_size=args.max_relative_size,
            nms_threshold=args.nms,
            top_k=args.top_k,
        ),
    )
    dicts = DatasetCatalog.get(args.dataset)
    proposals = compute_proposals(dicts, args.output, settings, args.workers)
    counts = [len(b) for b in proposals["boxes"]]
    print(f"{args.dataset}: {len(counts)} images, {np.mean(counts):.1f} proposals/image -> {args.output}")
    gt = [ground_truth_boxes(d) for d in dicts]
    if any(g is not None for g in gt):
        cov = proposal_coverage(proposals["boxes"], [g if g is not None else np.zeros((0, 4)) for g in gt], args.coverage_iou)
        share = cov["covered"] / max(cov["total"], 1)
        print(
            f"coverage: {cov['covered']} of {cov['total']} ground-truth boxes ({share:.1%}) have a proposal "
            f"at IoU >= {args.coverage_iou}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
