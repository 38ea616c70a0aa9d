"""The KAIST Multispectral Pedestrian benchmark as Detectron2 datasets.

KAIST (Hwang et al., CVPR 2015; CC BY-NC-SA 4.0) pairs every 640x512 colour frame with an
aligned thermal (LWIR) frame. Its annotations come in several versions that papers mix
freely, so a dataset name here fixes the image set *and* the annotation version:

=============  ==========================================================  =============
version        files under the KAIST root                                  format
=============  ==========================================================  =============
original       ``annotations/setXX/VYYY/IZZZZZ.txt``                       ``bbgt``
paired         ``annotations_paired/setXX/VYYY/{visible,lwir}/IZZZZZ.txt``  ``bbgt-paired``
sanitized      ``annotations-xml-new-sanitized/setXX/VYYY/IZZZZZ.xml``     ``voc-xml``
improved       ``annotations-test-improved/setXX_VYYY_IZZZZZ.txt``         ``bbgt-flat``
=============  ==========================================================  =============

(*paired*: Zhang et al., ICCV 2019, one box per modality; *sanitized*: the cleaned training
annotations of Li et al., BMVC 2018, as shipped in the official ``kaist-cvpr15`` release;
*improved*: the test annotations of Liu et al., BMVC 2016, published flat.) Images are
``images/setXX/VYYY/{visible,lwir}/IZZZZZ.jpg`` and image sets ``imageSets/<name>.txt``,
one ``setXX/VYYY/IZZZZZ`` a line. See ``datasets/README.md``.

Only ``person`` is a class. ``people``, ``cyclist``, ``person?``, objects whose file marks
them ignored and, under a :class:`TrainingSetting`, persons outside it stay in the dataset
dicts as ignore regions (``iscrowd=1``): Detectron2's mappers never make them ground truth
and the evaluator needs them. Each dict also carries its frame: ``set_id``, ``video_id``,
``frame_id``, ``day`` (sets 00-02 and 06-08 were recorded by day) and ``lwir_file_name``.
"""

import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

if TYPE_CHECKING:
    from kaisteval.bbgt import BBGTObject

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_VERSIONS",
    "KAISTFrame",
    "TrainingSetting",
    "TRAINING_SETTING",
    "load_kaist_dicts",
    "read_image_set",
    "register_kaist",
]

CLASS_NAME = "person"
DAY_SETS = frozenset({"set00", "set01", "set02", "set06", "set07", "set08"})
IMAGE_SIZE = (640, 512)  # width, height of every KAIST frame, both modalities
MODALITIES = ("visible", "lwir")


class AnnotationVersion(NamedTuple):
    directory: str  # default directory under the KAIST root
    format: str  # file layout and syntax; stored as metadata ``annotation_format``


ANNOTATION_VERSIONS = {
    "original": AnnotationVersion("annotations", "bbgt"),
    "paired": AnnotationVersion("annotations_paired", "bbgt-paired"),
    "sanitized": AnnotationVersion("annotations-xml-new-sanitized", "voc-xml"),
    "improved": AnnotationVersion("annotations-test-improved", "bbgt-flat"),
}
_FRAME_RE = re.compile(r"^(set\d{2})/(V\d{3})/(I\d{5})$")


@dataclass(frozen=True)
class TrainingSetting:
    """Which ``person`` boxes are training positives; the others become ignore regions.

    The default is the setting of the public MLPD/AR-CNN training code: boxes at least 12
    px tall lying inside the 5-px border of the frame (the KAIST toolbox's ``bnds``).
    """

    min_height: float = 12.0
    #: (x0, y0, x1, y1) a box must lie within; None for no bound.
    bounds: Optional[Tuple[float, float, float, float]] = (5.0, 5.0, 635.0, 507.0)

    def accepts(self, box_xywh: Sequence[float]) -> bool:
        x, y, w, h = box_xywh
        if h < self.min_height:
            return False
        if self.bounds is None:
            return True
        x0, y0, x1, y1 = self.bounds
        return x >= x0 and y >= y0 and x + w <= x1 and y + h <= y1


TRAINING_SETTING = TrainingSetting()


class KAISTFrame(NamedTuple):
    set_id: str  # "set06"
    video_id: str  # "V001"
    frame_id: str  # "I00459"

    @property
    def key(self) -> str:
        return f"{self.set_id}/{self.video_id}/{self.frame_id}"

    @property
    def day(self) -> bool:
        return self.set_id in DAY_SETS

    def image_file(self, image_root: str, modality: str) -> str:
        return os.path.join(image_root, self.set_id, self.video_id, modality, f"{self.frame_id}.jpg")

    def annotation_files(self, annotation_dir: str, annotation_format: str) -> List[str]:
        """The annotation file(s) of this frame: two (visible, lwir) for ``bbgt-paired``."""
        tree = os.path.join(annotation_dir, self.set_id, self.video_id)
        if annotation_format == "bbgt":
            return [os.path.join(tree, f"{self.frame_id}.txt")]
        if annotation_format == "voc-xml":
            return [os.path.join(tree, f"{self.frame_id}.xml")]
        if annotation_format == "bbgt-flat":
            return [os.path.join(annotation_dir, f"{self.set_id}_{self.video_id}_{self.frame_id}.txt")]
        if annotation_format == "bbgt-paired":
            return [os.path.join(tree, m, f"{self.frame_id}.txt") for m in MODALITIES]
        raise ValueError(f"Unknown KAIST annotation format {annotation_format!r}.")


def read_image_set(path: str) -> List[KAISTFrame]:
    """The frames listed in an image-set file (``setXX/VYYY/IZZZZZ`` a line)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"KAIST image set not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start}): not a KAIST image set") from None
    frames = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        match = _FRAME_RE.match(text)
        if match is None:
            raise ValueError(f"{path}:{lineno}: expected 'setXX/VYYY/IZZZZZ', got {text!r}")
        frames.append(KAISTFrame(*match.groups()))
    return frames


def read_voc_xml(path: str) -> List["BBGTObject"]:
    """The objects of a KAIST XML annotation (``<bndbox>`` with x, y, w, h children)."""
    from kaisteval.bbgt import BBGTObject

    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"KAIST XML annotation file not found: {path}") from None
    except ET.ParseError as e:
        raise ValueError(f"{path}: not well-formed XML ({e})") from None
    objects = []
    for index, obj in enumerate(root.iter("object"), start=1):
        try:
            box = obj.find("bndbox")
            x, y, w, h = (float(box.find(tag).text) for tag in ("x", "y", "w", "h"))
            label = obj.find("name").text.strip()
            occlusion = int(float(obj.findtext("occlusion", default="0")))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: object {index} lacks a name or a <bndbox> with numeric x, y, w, h.") from None
        if w < 0 or h < 0:
            raise ValueError(f"{path}: object {index} has a negative box size ({w} x {h}).")
        objects.append(BBGTObject(label, x, y, w, h, occlusion))
    return objects


def _iou(a: "BBGTObject", b: "BBGTObject") -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def pair_objects(
    visible: List["BBGTObject"], lwir: List["BBGTObject"], min_iou: float = 0.1
) -> List[Tuple[Optional["BBGTObject"], Optional["BBGTObject"]]]:
    """Match the objects of the two files of a paired annotation.

    The paired files list an object's two boxes on the same line when both modalities
    show it; when the counts differ (an object seen in one modality only), boxes are
    matched greedily by IoU instead, and the rest are single-modality objects.
    """
    if len(visible) == len(lwir) and all(v.label == t.label for v, t in zip(visible, lwir)):
        return list(zip(visible, lwir))
    candidates = sorted(((_iou(v, t), i, j) for i, v in enumerate(visible) for j, t in enumerate(lwir)), reverse=True)
    pairs, used_v, used_t = [], set(), set()
    for iou, i, j in candidates:
        if iou < min_iou:
            break
        if i not in used_v and j not in used_t:
            pairs.append((visible[i], lwir[j]))
            used_v.add(i)
            used_t.add(j)
    pairs += [(v, None) for i, v in enumerate(visible) if i not in used_v]
    pairs += [(None, t) for j, t in enumerate(lwir) if j not in used_t]
    return pairs


def _is_ignored(objects: Sequence[Optional["BBGTObject"]], setting: Optional[TrainingSetting]) -> bool:
    present = [o for o in objects if o is not None]
    if any(o.label != CLASS_NAME or o.ignore for o in present):
        return True
    return setting is not None and not any(setting.accepts(o.box_xywh) for o in present)


def _annotation(objects: Sequence[Optional["BBGTObject"]], setting: Optional[TrainingSetting]) -> Dict[str, Any]:
    """A Detectron2 annotation dict for one object (two boxes when paired)."""
    main = next(o for o in objects if o is not None)
    annotation = {
        "bbox": list(main.box_xywh),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": int(_is_ignored(objects, setting)),
        "label": main.label,
        "occlusion": main.occlusion,
    }
    if len(objects) == 2:
        for modality, obj in zip(MODALITIES, objects):
            annotation[f"bbox_{modality}"] = None if obj is None else list(obj.box_xywh)
    return annotation


def read_objects(path: str, annotation_format: str) -> List["BBGTObject"]:
    """The objects of one annotation file, with the evaluator's bbGt parser for text files.

    ``kaisteval`` is imported here, not with this module, so that ``import detpre`` (which
    registers the KAIST names) works where only the KAIST loading needs it.
    """
    from kaisteval.bbgt import read_bbgt

    return read_voc_xml(path) if annotation_format == "voc-xml" else read_bbgt(path)


def load_kaist_dicts(
    image_root: str,
    image_set_file: str,
    annotation_dir: str,
    annotation_format: str,
    setting: Optional[TrainingSetting] = None,
    image_size: Tuple[int, int] = IMAGE_SIZE,
) -> List[Dict[str, Any]]:
    """Detectron2 dataset dicts of the frames of an image set (see the module docstring).

    ``image_id`` is the frame's index in the image set, as in the COCO-style KAIST jsons.
    Every listed frame must have both images and its annotation file(s): the first missing
    files are named in the error. Image sizes are checked when the images are read (the
    mapper names a frame whose size differs from ``image_size`` or from its pair).
    """
    frames = read_image_set(image_set_file)
    width, height = image_size
    dicts, missing = [], []
    for image_id, frame in enumerate(frames):
        images = {m: frame.image_file(image_root, m) for m in MODALITIES}
        files = frame.annotation_files(annotation_dir, annotation_format)
        absent = [p for p in list(images.values()) + files if not os.path.isfile(p)]
        if absent:
            missing.extend(absent)
            continue
        if annotation_format == "bbgt-paired":
            objects = pair_objects(*(read_objects(p, annotation_format) for p in files))
        else:
            objects = [(o,) for o in read_objects(files[0], annotation_format)]
        dicts.append(
            {
                "file_name": images["visible"],
                "lwir_file_name": images["lwir"],
                "height": height,
                "width": width,
                "image_id": image_id,
                "set_id": frame.set_id,
                "video_id": frame.video_id,
                "frame_id": frame.frame_id,
                "day": frame.day,
                "annotations": [_annotation(o, setting) for o in objects],
            }
        )
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise FileNotFoundError(
            f"{len(missing)} files of the KAIST image set {image_set_file} are missing "
            f"(run datasets/check_kaist.py on the root):\n  {shown}{more}"
        )
    logger.info("Loaded %d KAIST frames from %s (%s annotations).", len(dicts), image_set_file, annotation_format)
    return dicts


def register_kaist(
    name: str,
    root: str,
    image_set: str,
    annotation_version: str,
    *,
    annotation_dir: Optional[str] = None,
    image_set_file: Optional[str] = None,
    setting: Optional[TrainingSetting] = None,
) -> None:
    """Register a KAIST root + image set + annotation version as dataset ``name``.

    Args:
        root: the KAIST root, holding ``images/`` and ``imageSets/``.
        image_set: image-set name, read from ``root/imageSets/<image_set>.txt``.
        annotation_version: one of ``ANNOTATION_VERSIONS``.
        annotation_dir: the annotations' directory, if not at the version's default place.
        image_set_file: the image-set file, if not at its default place.
        setting: persons outside it become ignore regions (training sets); None keeps
            every ``person`` a positive (test sets: the evaluator applies its own setting).
    """
    if annotation_version not in ANNOTATION_VERSIONS:
        raise ValueError(
            f"Unknown KAIST annotation version {annotation_version!r} for dataset {name!r}; "
            f"expected one of {sorted(ANNOTATION_VERSIONS)}."
        )
    version = ANNOTATION_VERSIONS[annotation_version]
    image_root = os.path.join(root, "images")
    annotation_dir = annotation_dir or os.path.join(root, version.directory)
    image_set_file = image_set_file or os.path.join(root, "imageSets", f"{image_set}.txt")
    DatasetCatalog.register(
        name,
        lambda: load_kaist_dicts(image_root, image_set_file, annotation_dir, version.format, setting),
    )
    MetadataCatalog.get(name).set(
        evaluator_type="kaist",
        thing_classes=[CLASS_NAME],
        image_root=image_root,
        annotation_dir=annotation_dir,
        annotation_format=version.format,
        annotation_version=annotation_version,
        image_set=image_set,
        image_set_file=image_set_file,
    )


# name: (image set, annotation version, training setting)
BUILTIN_KAIST = {
    "kaist_train_all02": ("train-all-02", "original", TRAINING_SETTING),
    "kaist_train_all02_paired": ("train-all-02", "paired", TRAINING_SETTING),
    "kaist_train_all02_sanitized": ("train-all-02", "sanitized", TRAINING_SETTING),
    "kaist_test_all20": ("test-all-20", "original", None),
    "kaist_test_all20_improved": ("test-all-20", "improved", None),
}


def register_all_kaist(root: str) -> None:
    """Register the builtin KAIST datasets under ``root`` (lazily: nothing is read yet)."""
    for name, (image_set, version, setting) in BUILTIN_KAIST.items():
        register_kaist(name, root, image_set, version, setting=setting)


register_all_kaist(os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "kaist"))
