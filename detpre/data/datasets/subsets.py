"""Deterministic, nested subsets of any registered dataset, registered by name.

*Rethinking ImageNet Pre-training* trains on 1k/3.5k/10k/35k COCO images and AlignDet
fine-tunes on 1/5/10/20% of COCO. Comparisons across initialisations only mean something
when every run sees the same images, so a subset is defined by (source, size, seed) alone:
images are ordered by a SHA-256 hash of ``"{seed}:{image_id}"`` — the same on every
machine, Python and NumPy version — and a subset of size n is the first n of that order.
Hence subsets of one seed are nested (every 1k subset lies inside the 10k one).

The size counts *trainable* images, those the training loader keeps
(:func:`detpre.data.annotation_checks.is_trainable`: a non-crowd box of positive size, in
its image): about 1% of COCO train2017 has no such box, and a subset drawn over every image
would train on fewer images than its name says. Images that are not trainable are skipped
in the order and left out of the subset, so ``coco_2017_train_35k_s0`` holds 35,000 images
and trains on all of them; a percentage is of the source's trainable images. The
``_unfiltered`` form counts every image instead (for unlabeled data, or an evaluation
split, where images without boxes belong): ``coco_2017_train_35k_unfiltered_s0`` is the
first 35,000 images of the same order, and its trainable images are the first ones of
``coco_2017_train_35k_s0``. (Detectron2's keypoint filter, ``MIN_KEYPOINTS_PER_IMAGE``, is
a config choice the subset cannot see and is not counted.)

Names follow ``<source>_<size>[_unfiltered]_s<seed>``: ``coco_2017_train_10k_s0``,
``coco_2017_train_3.5k_s1``, ``coco_2017_train_10pct_s0``, ``detpre_demo_train_50_s0``,
``coco_2017_val_500_unfiltered_s0``.
"""

import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict

from ..annotation_checks import is_trainable

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(
    r"^(?P<source>.+)_(?P<size>\d+(?:\.\d+)?(?:k|pct)|\d+)(?P<unfiltered>_unfiltered)?_s(?P<seed>\d+)$"
)

# Metadata that describes the *source's* files: a subset must not inherit it, or Detectron2's
# COCOEvaluator would score a subset against the full source json.
_NOT_INHERITED = ("name", "json_file")

# The subsets of the two papers, registered up front so that they show in DatasetCatalog.
PAPER_SUBSETS = ("1k", "3.5k", "10k", "35k", "1pct", "5pct", "10pct", "20pct")


@dataclass(frozen=True)
class SubsetSpec:
    """A subset of ``source``: ``count`` images, or ``percent`` of them, chosen by ``seed``;
    trainable images only, or every image with ``unfiltered``."""

    source: str
    seed: int
    count: Optional[int] = None
    percent: Optional[float] = None
    unfiltered: bool = False

    @classmethod
    def parse(cls, size: Union[str, int], source: str, seed: int, unfiltered: bool = False) -> "SubsetSpec":
        """Parse a size such as ``"10k"``, ``"3.5k"``, ``1000`` or ``"10pct"``."""
        text = str(size).strip().lower()
        try:
            if text.endswith("pct"):
                percent = float(text[:-3])
                if not 0 < percent <= 100:
                    raise ValueError
                return cls(source, int(seed), percent=percent, unfiltered=unfiltered)
            count = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
            if count < 1 or count != int(count):
                raise ValueError
            return cls(source, int(seed), count=int(count), unfiltered=unfiltered)
        except ValueError:
            raise ValueError(
                f"Invalid subset size {size!r} for dataset {source!r}: expected an image count "
                "('1000', '10k', '3.5k') or a percentage ('10pct')."
            ) from None

    @property
    def size_tag(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}pct"
        return f"{self.count / 1000:g}k" if self.count % 100 == 0 and self.count >= 1000 else str(self.count)

    @property
    def name(self) -> str:
        return f"{self.source}_{self.size_tag}{'_unfiltered' if self.unfiltered else ''}_s{self.seed}"

    def size_of(self, num_eligible: int, num_images: int) -> int:
        """How many images the subset takes from a source of ``num_images``, ``num_eligible``
        of which it may take (the trainable ones; all of them with ``unfiltered``)."""
        size = self.count if self.percent is None else max(1, int(round(num_eligible * self.percent / 100.0)))
        if size <= num_eligible:
            return size
        if self.unfiltered:
            raise ValueError(
                f"Subset {self.name!r} asks for {size} images but its source dataset {self.source!r} "
                f"has only {num_images}."
            )
        raise ValueError(
            f"Subset {self.name!r} asks for {size} trainable images but its source dataset {self.source!r} "
            f"has only {num_eligible} ({num_images} in all; {replace(self, unfiltered=True).name!r} "
            "counts every image)."
        )


def _image_key(record: Dict[str, Any]) -> str:
    if "image_id" in record:
        return str(record["image_id"])
    return str(record["file_name"])


def subset_order(keys: Iterable[str], seed: int) -> List[str]:
    """Keys in the seeded order that every subset of ``seed`` takes a prefix of."""
    digest = lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()  # noqa: E731
    return sorted(keys, key=lambda key: (digest(key), key))


def select_subset(records: List[Dict[str, Any]], spec: SubsetSpec) -> List[Dict[str, Any]]:
    """The records of ``spec``'s subset, in the source's order: the first trainable images
    of the seed's order (every image's, with ``spec.unfiltered``)."""
    keys = [_image_key(r) for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Dataset {spec.source!r} has duplicate image ids; cannot take a subset.")
    eligible = set(keys) if spec.unfiltered else {k for r, k in zip(records, keys) if is_trainable(r)}
    order = [k for k in subset_order(keys, spec.seed) if k in eligible]
    chosen = set(order[: spec.size_of(len(eligible), len(records))])
    return [r for r, k in zip(records, keys) if k in chosen]


def register_subset(source: str, size: Union[str, int], seed: int = 0, name: str = "", unfiltered: bool = False) -> str:
    """Register the subset of ``source`` and return its name (idempotent); ``unfiltered``
    counts every image rather than the trainable ones."""
    spec = SubsetSpec.parse(size, source, seed, unfiltered)
    name = name or spec.name
    if name in DatasetCatalog.list():
        return name

    def load() -> List[Dict[str, Any]]:
        records = DatasetCatalog.get(source)
        # Loading the source may set metadata (Detectron2's load_coco_json sets thing_classes).
        _inherit_metadata(source, name)
        return select_subset(records, spec)

    DatasetCatalog.register(name, load)
    _inherit_metadata(source, name)
    MetadataCatalog.get(name).set(
        subset_of=source,
        subset_size=spec.size_tag,
        subset_seed=spec.seed,
        subset_counts="every image" if spec.unfiltered else "trainable images",
    )
    return name


def _inherit_metadata(source: str, name: str) -> None:
    """Copy to subset ``name`` the metadata of ``source`` it does not have yet (not the keys of
    :data:`_NOT_INHERITED`, which describe the source's own files)."""
    if source not in MetadataCatalog.list():
        return
    own = MetadataCatalog.get(name)
    source_metadata = MetadataCatalog.get(source).as_dict()
    own.set(**{k: v for k, v in source_metadata.items() if k not in _NOT_INHERITED and not hasattr(own, k)})


def ensure_subset_registered(name: str) -> bool:
    """Register ``name`` if it is an unregistered ``<source>_<size>[_unfiltered]_s<seed>`` of a
    registered dataset; returns whether ``name`` is now registered (as any dataset)."""
    if name in DatasetCatalog.list():
        return True
    match = _NAME_RE.match(name)
    if match is None or match.group("source") not in DatasetCatalog.list():
        return False
    unfiltered = match.group("unfiltered") is not None
    register_subset(match.group("source"), match.group("size"), int(match.group("seed")), name, unfiltered)
    return True


def register_paper_subsets(source: str = "coco_2017_train", seeds: Iterable[int] = (0,)) -> None:
    """Register the subsets of both papers for ``source`` (lazy: nothing is loaded)."""
    for seed in seeds:
        for size in PAPER_SUBSETS:
            register_subset(source, size, seed)


def subset_coco_dict(source: str, name: str) -> dict:
    """The COCO dict of registered subset ``name`` of ``source`` (``tools/make_subset.py``).

    Where the source was registered from a COCO json, that json is filtered, so every field
    (masks, keypoints, licences) survives; otherwise the dicts are converted with Detectron2's
    ``convert_to_coco_dict``."""
    records = DatasetCatalog.get(name)
    json_file = MetadataCatalog.get(source).get("json_file", None)
    if not json_file:
        return convert_to_coco_dict(name)
    with open(json_file) as f:
        coco = json.load(f)
    keep = {r["image_id"] for r in records}
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in keep]
    return coco
