"""``detpre_demo``: a synthetic detection dataset that detpre draws itself on first use.

The demo (``make demo``) has to train a detector *from scratch* on a laptop CPU in minutes
and still show a real AP-vs-iteration curve, with nothing to download. So the data is
drawn here: coloured shapes (one shape, and a hue band, per class) of 16-48 px on
textured 128 px backgrounds, with polygon masks so that Mask R-CNN configs train on it
too. It is written as PNG images plus COCO json, so every Detectron2 tool (COCOEvaluator,
visualizers, ``load_coco_json``) reads it as it reads COCO.

Everything is a function of a seed: image ``i`` of a split is drawn from its own RNG
``(seed, split, i)``, so the same seed gives identical json and image bytes on every run.

Registration at import is cheap and writes nothing. The files are generated on the first
``DatasetCatalog.get`` of either split (or by :func:`ensure_demo_dataset`), into a temporary
directory renamed into place under a file lock, so two processes starting at once (ranks
of one job, two jobs) never see half a dataset. A ``manifest.json`` (generator version,
seed, split sizes) is written last; a root whose manifest does not match (an older
generator, another seed, an interrupted copy) is replaced.

Root: ``$DETPRE_DEMO_ROOT``, else ``$DETECTRON2_DATASETS/detpre_demo`` (default
``./datasets/detpre_demo``, as Detectron2 places its datasets).
"""

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_CLASSES",
    "DemoSpec",
    "demo_root",
    "draw_demo_image",
    "ensure_demo_dataset",
    "generate_demo_dataset",
    "register_demo",
]

# Bump whenever the drawing changes: an existing dataset of another version is redrawn.
GENERATOR_VERSION = 1

DEMO_CLASSES = ("circle", "square", "triangle", "star")
# Base hue (OpenCV's 0-180 scale) of each class; each object jitters around it, so colour
# helps but does not alone name the class at the band edges.
_CLASS_HUES = (0, 60, 110, 25)
_HUE_JITTER = 12
# Colours for Detectron2's Visualizer (RGB), one per class.
_THING_COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 160, 30)]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DemoSpec:
    """What a demo dataset is: everything its files are a function of."""

    seed: int = 0
    # Images per split.
    splits: Dict[str, int] = field(default_factory=lambda: {"train": 1000, "val": 100})
    # Min, max side in pixels (each side drawn). Square 128 px by default: batches are then
    # never padded, and a CPU trains on many images a minute.
    image_size: Tuple[int, int] = (128, 128)
    object_size: Tuple[int, int] = (16, 48)  # min, max object extent (circumscribed circle)
    objects_per_image: Tuple[int, int] = (1, 5)  # min, max

    def manifest(self) -> Dict[str, Any]:
        """The manifest of a dataset generated from this spec (json-comparable)."""
        d = asdict(self)
        d["image_size"], d["object_size"] = list(self.image_size), list(self.object_size)
        d["objects_per_image"] = list(self.objects_per_image)
        return {"generator": __name__, "version": GENERATOR_VERSION, "classes": list(DEMO_CLASSES), **d}


def demo_root() -> str:
    """``$DETPRE_DEMO_ROOT``, else ``$DETECTRON2_DATASETS/detpre_demo`` (default ``datasets``)."""
    override = os.getenv("DETPRE_DEMO_ROOT")
    if override:
        return os.path.expanduser(override)
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "detpre_demo")


def annotation_file(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def image_dir(root: str, split: str) -> str:
    return os.path.join(root, split)


# --------------------------------------------------------------------------- drawing
def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-saturation background: a few random gratings, soft blobs and pixel noise.

    Saturation is kept low so that objects stand out by colour, but the gratings and
    blobs put edges everywhere, so a detector cannot just threshold brightness.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gray = np.full((height, width), rng.uniform(70, 170), np.float32)
    for _ in range(rng.integers(2, 5)):
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 48)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        gray += rng.uniform(8, 30) * np.sin(phase + rng.uniform(0, 2 * math.pi))
    for _ in range(rng.integers(3, 9)):
        cx, cy, s = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 30)
        gray += rng.uniform(-40, 40) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    gray += rng.normal(0, 6, size=gray.shape)
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # a faint colour cast
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) of a class's shape inscribed in a circle of ``radius``."""
    if shape == "circle":
        n, radii = 32, [radius]
    elif shape == "square":
        n, radii = 4, [radius]
    elif shape == "triangle":
        n, radii = 3, [radius]
    elif shape == "star":
        n, radii = 10, [radius, radius * 0.45]
    else:
        raise ValueError(f"Unknown demo shape {shape!r}; expected one of {DEMO_CLASSES}.")
    t = angle + np.arange(n) * (2 * math.pi / n)
    r = np.resize(np.asarray(radii, np.float64), n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _class_color(rng: np.random.Generator, class_id: int) -> Tuple[int, int, int]:
    """A saturated BGR colour in the class's hue band."""
    hue = (_CLASS_HUES[class_id] + rng.integers(-_HUE_JITTER, _HUE_JITTER + 1)) % 180
    hsv = np.array([[[hue, rng.integers(170, 256), rng.integers(150, 256)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _round(values, ndigits: int = 2) -> List[float]:
    return [round(float(v), ndigits) for v in values]


def draw_demo_image(spec: DemoSpec, split_index: int, index: int) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Draw image ``index`` of a split: a BGR array and its COCO annotations (no ids).

    Objects do not overlap (their circumscribed circles are disjoint, 2 px apart), so each
    drawn polygon is exactly its mask and its box.
    """
    rng = np.random.default_rng([spec.seed, split_index, index])
    height, width = (int(rng.integers(spec.image_size[0], spec.image_size[1] + 1)) for _ in range(2))
    image = _texture(rng, height, width)
    placed: List[Tuple[float, float, float]] = []
    annotations = []
    for _ in range(int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))):
        class_id = int(rng.integers(len(DEMO_CLASSES)))
        radius = rng.uniform(*spec.object_size) / 2
        for _attempt in range(20):  # rejection sampling of a free spot
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue  # the image is full
        placed.append((cx, cy, radius))
        poly = _polygon(DEMO_CLASSES[class_id], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        # cv2 draws sub-pixel polygons with `shift` fractional bits.
        cv2.fillPoly(
            image, [np.round(poly * 16).astype(np.int32)], _class_color(rng, class_id), lineType=cv2.LINE_AA, shift=4
        )
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        annotations.append(
            {
                "category_id": class_id + 1,
                "bbox": _round([x0, y0, x1 - x0, y1 - y0]),
                "area": round(float(cv2.contourArea(poly.astype(np.float32))), 2),
                "segmentation": [_round(poly.reshape(-1))],
                "iscrowd": 0,
            }
        )
    return image, annotations


# ------------------------------------------------------------------------- writing
def generate_demo_dataset(root: str, spec: DemoSpec = DemoSpec()) -> None:
    """Write the dataset of ``spec`` into the directory ``root`` (created; must not hold
    another dataset). Not atomic by itself: see :func:`ensure_demo_dataset`."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DEMO_CLASSES)]
    for split_index, (split, count) in enumerate(sorted(spec.splits.items())):
        os.makedirs(image_dir(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, anns = draw_demo_image(spec, split_index, i)
            file_name = f"{i:06d}.png"
            if not cv2.imwrite(os.path.join(image_dir(root, split), file_name), image):
                raise OSError(f"Could not write demo image {os.path.join(image_dir(root, split), file_name)}")
            images.append({"id": i + 1, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
        with open(annotation_file(root, split), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    with open(os.path.join(root, MANIFEST), "w") as f:  # last: its presence means complete
        json.dump(spec.manifest(), f, indent=1, sort_keys=True)


def is_current(root: str, spec: DemoSpec) -> bool:
    """Whether ``root`` holds the complete dataset of ``spec`` (manifest and json files)."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest != json.loads(json.dumps(spec.manifest())):
        return False
    return all(os.path.isfile(annotation_file(root, split)) for split in spec.splits)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """An exclusive lock across processes on ``directory`` itself (``flock`` on its file
    descriptor), so that no lock file is left behind in the user's dataset directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_demo_dataset(root: Optional[str] = None, spec: DemoSpec = DemoSpec()) -> str:
    """Generate the dataset of ``spec`` at ``root`` unless it is already there; return ``root``.

    Safe when several processes call it at once: under a lock on ``root``'s parent, the data is
    written to a temporary directory next to it and renamed into place, so a reader sees
    the old root or the complete new one. A root whose manifest does not match ``spec`` is
    moved aside and deleted.
    """
    root = os.path.abspath(root or demo_root())
    if is_current(root, spec):
        return root
    parent, base = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    with _locked(parent):
        if is_current(root, spec):  # another process generated it while we waited
            return root
        logger.info("Generating the detpre demo dataset (seed %d) at %s ...", spec.seed, root)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")
        try:
            generate_demo_dataset(tmp, spec)
            stale = None
            if os.path.lexists(root):
                if not os.path.isdir(root) or os.listdir(root):
                    logger.warning("Replacing %s: it is not the demo dataset of this detpre version and seed.", root)
                stale = tempfile.mkdtemp(dir=parent, prefix=f".{base}.stale-")
                os.rename(root, os.path.join(stale, base))
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    return root


# --------------------------------------------------------------------- registration
def register_demo(prefix: str = "detpre_demo", root: Optional[str] = None, spec: DemoSpec = DemoSpec()) -> List[str]:
    """Register ``<prefix>_<split>`` for every split of ``spec`` and return the names.

    Registration writes nothing: Detectron2's ``register_coco_instances`` sets the metadata
    every COCO tool expects (``json_file``, ``image_root``, ``evaluator_type="coco"``), and the
    loader it registers is wrapped so that the files are generated first.
    """
    root = os.path.abspath(root or demo_root())
    names = []
    for split in sorted(spec.splits):
        name = f"{prefix}_{split}"
        metadata = {"thing_classes": list(DEMO_CLASSES), "thing_colors": _THING_COLORS, "demo_seed": spec.seed}
        register_coco_instances(name, metadata, annotation_file(root, split), image_dir(root, split))
        load_coco = DatasetCatalog[name]  # load_coco_json(json_file, image_root, name)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _generate_then(load_coco, root, spec))
        names.append(name)
    return names


def _generate_then(load: Callable[[], List[Dict[str, Any]]], root: str, spec: DemoSpec):
    def generate_and_load() -> List[Dict[str, Any]]:
        ensure_demo_dataset(root, spec)
        return load()

    return generate_and_load
