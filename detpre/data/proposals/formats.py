"""Proposal files: Detectron2's pickle and AlignDet's COCO json, written and read.

Two containers for the same content (per image, boxes in the generator's order):

* **Detectron2** (``.pkl``): ``ids``, ``boxes`` (XYXY_ABS), ``objectness_logits`` and
  ``bbox_mode``, as ``DATASETS.PROPOSAL_FILES_TRAIN`` + ``MODEL.LOAD_PROPOSALS`` read it; the
  logits are ``-rank``, so Detectron2's sort by logit keeps the order. Fast to load (numpy
  arrays), and it puts the boxes into any registered dataset without touching annotations.
* **AlignDet / COCO** (``.json``): the format of AlignDet's released
  ``filtered_proposals/train2017_ratio3size0008@0.5.json``: a COCO instances file with one
  category, ``selective_search``, each proposal an annotation (``bbox`` in xywh), in order.

:func:`load_proposals_into_dicts` reads either, so both train as they are: the json's
annotations become each dataset dict's ``proposal_boxes`` by ``image_id``, read as mmdet's
``CocoDataset`` reads them (``[x, y, x + w, y + h]``; crowd boxes, boxes outside the image,
with ``w < 1``, ``h < 1`` or ``area <= 0`` skipped; other categories ignored). Both writers
are deterministic: the same content gives the same bytes.
"""

import json
import os
import pickle
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
from detectron2.data.build import load_proposals_into_dataset
from detectron2.structures import BoxMode

from ...utils.file_io import atomic_write
from .filters import rank_logits

__all__ = [
    "COCO_CATEGORY",
    "ImageRecord",
    "load_proposals_into_dicts",
    "read_coco_proposals",
    "write_proposal_file",
]

#: The one category of AlignDet's proposal json.
COCO_CATEGORY = "selective_search"
#: pickle protocol of detpre's files: fixed, so the bytes do not depend on the Python default.
PICKLE_PROTOCOL = 4

#: What a file needs of each image: ``{"image_id", "file_name", "height", "width"}``.
ImageRecord = Mapping[str, Any]


def file_format(path: str) -> str:
    """``"coco"`` for ``.json``, ``"detectron2"`` otherwise (``.pkl``)."""
    return "coco" if path.lower().endswith(".json") else "detectron2"


def _number(value: float):
    """A coordinate for json: an int when integral (SoCo's boxes are), else the float."""
    value = float(value)
    return int(value) if value.is_integer() else value


def coco_proposals(images: Sequence[ImageRecord], boxes: Sequence[np.ndarray], about: Dict[str, Any]) -> Dict:
    """The COCO json content of ``boxes`` (XYXY per image, in order) of ``images``."""
    annotations: List[Dict[str, Any]] = []
    for image, image_boxes in zip(images, boxes):
        for x0, y0, x1, y1 in np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4):
            w, h = _number(x1 - x0), _number(y1 - y0)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["image_id"],
                    "category_id": 1,
                    "bbox": [_number(x0), _number(y0), w, h],
                    "area": _number(w * h),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": "unsupervised box proposals (detpre tools/precompute_proposals.py)",
            "proposals": about,
        },
        "images": [
            {"id": i["image_id"], "file_name": i["file_name"], "height": int(i["height"]), "width": int(i["width"])}
            for i in images
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": COCO_CATEGORY, "supercategory": COCO_CATEGORY}],
    }


def write_proposal_file(
    path: str, images: Sequence[ImageRecord], boxes: Sequence[np.ndarray], about: Dict[str, Any]
) -> None:
    """Write ``boxes`` (per image, XYXY_ABS in order) in the format of ``path``'s extension;
    ``about`` (the settings that made them) is stored with them."""
    boxes = [np.ascontiguousarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
    if file_format(path) == "coco":
        with atomic_write(path) as f:
            json.dump(coco_proposals(images, boxes, about), f, separators=(",", ":"))
        return
    content = {
        "ids": [i["image_id"] for i in images],
        "boxes": boxes,
        "objectness_logits": [rank_logits(len(b)) for b in boxes],
        "bbox_mode": BoxMode.XYXY_ABS.value,
        "proposals": about,
    }
    with atomic_write(path, "wb") as f:
        pickle.dump(content, f, protocol=PICKLE_PROTOCOL)


def read_coco_proposals(path: str) -> Dict[str, Dict[str, Any]]:
    """``{str(image_id): {"boxes": N x 4 XYXY float32 (file order), "height", "width"}}`` of a
    COCO-format proposal json (see the module docstring for what is skipped)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read proposal file {path}: {e}") from None
    for key in ("images", "annotations", "categories"):
        if key not in content:
            raise ValueError(f"Proposal file {path} is not a COCO json: it has no {key!r}.")
    categories = {c["id"] for c in content["categories"] if c.get("name") == COCO_CATEGORY}
    if not categories:
        names = [c.get("name") for c in content["categories"]]
        raise ValueError(f"Proposal file {path} has no {COCO_CATEGORY!r} category (it has {names}).")
    images = {str(i["id"]): i for i in content["images"]}
    rows: Dict[str, List[List[float]]] = defaultdict(list)
    for ann in content["annotations"]:
        image = images.get(str(ann["image_id"]))
        if image is None:
            raise ValueError(
                f"Proposal file {path}: annotation {ann.get('id')} names unknown image {ann['image_id']!r}."
            )
        if ann.get("category_id") not in categories or ann.get("iscrowd", 0) or ann.get("ignore", False):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        inside_w = max(0.0, min(x + w, image["width"]) - max(x, 0.0))
        inside_h = max(0.0, min(y + h, image["height"]) - max(y, 0.0))
        if inside_w * inside_h == 0 or ann.get("area", w * h) <= 0 or w < 1 or h < 1:
            continue
        rows[str(ann["image_id"])].append([x, y, x + w, y + h])
    return {
        key: {
            "boxes": np.asarray(rows.get(key, []), dtype=np.float32).reshape(-1, 4),
            "height": image["height"],
            "width": image["width"],
        }
        for key, image in images.items()
    }


def load_proposals_into_dicts(dicts: List[Dict[str, Any]], path: str) -> List[Dict[str, Any]]:
    """Put the proposals of ``path`` (either format) into ``dicts`` (in place, and returned) as
    Detectron2 does: ``proposal_boxes`` (XYXY_ABS, in the file's order),
    ``proposal_objectness_logits``, ``proposal_bbox_mode``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Proposal file {path} does not exist (DATASETS.PROPOSAL_FILES_TRAIN).")
    if file_format(path) == "detectron2":
        return load_proposals_into_dataset(dicts, path)
    by_id = read_coco_proposals(path)
    missing = [d["image_id"] for d in dicts if str(d["image_id"]) not in by_id]
    if missing:
        raise KeyError(
            f"Proposal file {path} has no entry for {len(missing)} of the dataset's {len(dicts)} images "
            f"(e.g. image_id {missing[0]!r}): it was made for another dataset."
        )
    for d in dicts:
        entry = by_id[str(d["image_id"])]
        if "height" in d and (d["height"], d["width"]) != (entry["height"], entry["width"]):
            raise ValueError(
                f"Proposal file {path}: image {d['image_id']!r} is {entry['width']}x{entry['height']} there, "
                f"{d['width']}x{d['height']} in the dataset."
            )
        d["proposal_boxes"] = entry["boxes"]
        d["proposal_objectness_logits"] = rank_logits(len(entry["boxes"]))
        d["proposal_bbox_mode"] = BoxMode.XYXY_ABS
    return dicts
