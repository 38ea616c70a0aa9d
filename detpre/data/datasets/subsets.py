"""Deterministic, nested subsets of any registered dataset, registered by name.

*Rethinking ImageNet Pre-training* trains on 1k/3.5k/10k/35k COCO images and AlignDet
fine-tunes on 1/5/10/20% of COCO. Comparisons across initialisations only mean something
when every run sees the same images, so a subset is defined by (source, size, seed) alone:
images are ordered by a SHA-256 hash of ``"{seed}:{image_id}"`` — the same on every
machine, Python and NumPy version — and a subset of size n is the first n of that order.
Hence subsets of one seed are nested (every 1k subset lies inside the 10k one).

Names follow ``<source>_<size>_s<seed>``: ``coco_2017_train_10k_s0``,
``coco_2017_train_3.5k_s1``, ``coco_2017_train_10pct_s0``, ``detpre_demo_train_50_s0``.
"""
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(?P<source>.+)_(?P<size>\d+(?:\.\d+)?(?:k|pct)|\d+)_s(?P<seed>\d+)$")

# Metadata that describes the *source's* files: a subset must not inherit it, or Detectron2's
# COCOEvaluator would score a subset against the full source json.
_NOT_INHERITED = ("name", "json_file")

# The subsets of the two papers, registered up front so that they show in DatasetCatalog.
PAPER_SUBSETS = ("1k", "3.5k", "10k", "35k", "1pct", "5pct", "10pct", "20pct")


@dataclass(frozen=True)
class SubsetSpec:
    """A subset of ``source``: ``count`` images, or ``percent`` of them, chosen by ``seed``."""

    source: str
    seed: int
    count: Optional[int] = None
    percent: Optional[float] = None

    @classmethod
    def parse(cls, size: Union[str, int], source: str, seed: int) -> "SubsetSpec":
        """Parse a size such as ``"10k"``, ``"3.5k"``, ``1000`` or ``"10pct"``."""
        text = str(size).strip().lower()
        try:
            if text.endswith("pct"):
                percent = float(text[:-3])
                if not 0 < percent <= 100:
                    raise ValueError
                return cls(source, int(seed), percent=percent)
            count = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
            if count < 1 or count != int(count):
                raise ValueError
            return cls(source, int(seed), count=int(count))
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
        return f"{self.source}_{self.size_tag}_s{self.seed}"

    def size_of(self, num_source_images: int) -> int:
        """The number of images this subset takes from a source of that many images."""
        if self.percent is not None:
            return max(1, int(round(num_source_images * self.percent / 100.0)))
        if self.count > num_source_images:
            raise ValueError(
                f"Subset {self.name!r} asks for {self.count} images but its source dataset "
                f"{self.source!r} has only {num_source_images}."
            )
        return self.count


def _image_key(record: Dict[str, Any]) -> str:
    if "image_id" in record:
        return str(record["image_id"])
    return str(record["file_name"])


def subset_order(keys: Iterable[str], seed: int) -> List[str]:
    """Keys in the seeded order that every subset of ``seed`` takes a prefix of."""
    digest = lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()  # noqa: E731
    return sorted(keys, key=lambda key: (digest(key), key))


def select_subset(records: List[Dict[str, Any]], spec: SubsetSpec) -> List[Dict[str, Any]]:
    """The records of ``spec``'s subset, in the source's order."""
    keys = [_image_key(r) for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Dataset {spec.source!r} has duplicate image ids; cannot take a subset.")
    chosen = set(subset_order(keys, spec.seed)[: spec.size_of(len(records))])
    return [r for r, k in zip(records, keys) if k in chosen]


def register_subset(source: str, size: Union[str, int], seed: int = 0, name: str = "") -> str:
    """Register the subset of ``source`` and return its name (idempotent)."""
    spec = SubsetSpec.parse(size, source, seed)
    name = name or spec.name
    if name in DatasetCatalog.list():
        return name
    DatasetCatalog.register(name, lambda: select_subset(DatasetCatalog.get(source), spec))
    inherited = {}
    if source in MetadataCatalog.list():
        inherited = {
            k: v for k, v in MetadataCatalog.get(source).as_dict().items() if k not in _NOT_INHERITED
        }
    MetadataCatalog.get(name).set(
        **inherited, subset_of=source, subset_size=spec.size_tag, subset_seed=spec.seed
    )
    return name


def ensure_subset_registered(name: str) -> bool:
    """Register ``name`` if it is an unregistered ``<source>_<size>_s<seed>`` of a registered
    dataset; returns whether ``name`` is now registered (as any dataset)."""
    if name in DatasetCatalog.list():
        return True
    match = _NAME_RE.match(name)
    if match is None or match.group("source") not in DatasetCatalog.list():
        return False
    register_subset(match.group("source"), match.group("size"), int(match.group("seed")), name=name)
    return True


def register_paper_subsets(source: str = "coco_2017_train", seeds: Iterable[int] = (0,)) -> None:
    """Register the subsets of both papers for ``source`` (lazy: nothing is loaded)."""
    for seed in seeds:
        for size in PAPER_SUBSETS:
            register_subset(source, size, seed)


if "coco_2017_train" in DatasetCatalog.list():
    register_paper_subsets()
