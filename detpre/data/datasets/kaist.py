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
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from kaisteval.bbgt import BBGTObject, read_bbgt
from kaisteval.frames import FRAME_SIZE, MODALITIES, Frame, annotation_file, image_file, parse_frame, read_image_set
from kaisteval.protocol import X_RANGE, Y_RANGE

from ..multispectral import FILE_KEYS, box_key

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_VERSIONS",
    "TRAINING_SETTING",
    "TrainingSetting",
    "frame_of_record",
    "load_kaist_dicts",
    "register_kaist",
]

CLASS_NAME = "person"
#: The dict keys that name a record's frame ("set06", "V000", "I00019").
FRAME_KEYS = ("set_id", "video_id", "frame_id")


class AnnotationVersion(NamedTuple):
    directory: str  # default directory under the KAIST root
    format: str  # syntax and layout; stored as metadata ``annotation_format``


ANNOTATION_VERSIONS = {
    "original": AnnotationVersion("annotations", "bbgt"),
    "paired": AnnotationVersion("annotations_paired", "bbgt-paired"),
    "sanitized": AnnotationVersion("annotations-xml-new-sanitized", "voc-xml"),
    "improved": AnnotationVersion("annotations-test-improved", "bbgt-flat"),
}
#: Where each format's files live (kaisteval's annotation layouts).
FORMAT_LAYOUTS = {"bbgt": "tree", "bbgt-paired": "paired", "voc-xml": "xml", "bbgt-flat": "flat"}


@dataclass(frozen=True)
class TrainingSetting:
    """Which ``person`` boxes are training positives; the others become ignore regions.

    The default is the setting of the public MLPD/AR-CNN training code: boxes at least 12
    px tall lying inside the 5-px border of the frame (the KAIST toolbox's ``bnds``,
    ``kaisteval.protocol.X_RANGE`` / ``Y_RANGE``).
    """

    min_height: float = 12.0
    #: (x0, y0, x1, y1) a box must lie within; None for no bound.
    bounds: Optional[Tuple[float, float, float, float]] = (X_RANGE[0], Y_RANGE[0], X_RANGE[1], Y_RANGE[1])

    def accepts(self, box_xywh: Sequence[float]) -> bool:
        x, y, w, h = box_xywh
        if h < self.min_height:
            return False
        if self.bounds is None:
            return True
        x0, y0, x1, y1 = self.bounds
        return x >= x0 and y >= y0 and x + w <= x1 and y + h <= y1


TRAINING_SETTING = TrainingSetting()


def annotation_files(frame: Frame, annotation_dir: str, annotation_format: str) -> List[str]:
    """The annotation file(s) of ``frame``: two (visible, lwir) for ``bbgt-paired``."""
    if annotation_format not in FORMAT_LAYOUTS:
        raise ValueError(f"Unknown KAIST annotation format {annotation_format!r}.")
    layout = FORMAT_LAYOUTS[annotation_format]
    if annotation_format == "bbgt-paired":
        return [annotation_file(annotation_dir, frame, layout, m) for m in MODALITIES]
    return [annotation_file(annotation_dir, frame, layout)]


def frame_of_record(record: Dict[str, Any]) -> Frame:
    """The frame of a KAIST dataset dict (its ``set_id``/``video_id``/``frame_id``)."""
    try:
        return parse_frame("/".join(str(record[k]) for k in FRAME_KEYS))
    except (KeyError, ValueError):
        raise KeyError(
            f"image {record.get('image_id')!r} has no KAIST frame in {FRAME_KEYS} (e.g. 'set06', 'V000', "
            "'I00019'); register KAIST data with detpre.data.datasets.kaist."
        ) from None


def read_voc_xml(path: str) -> List[BBGTObject]:
    """The objects of a KAIST XML annotation (``<bndbox>`` with x, y, w, h children)."""
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


def _iou(a: BBGTObject, b: BBGTObject) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def pair_objects(
    visible: List[BBGTObject], lwir: List[BBGTObject], min_iou: float = 0.1
) -> List[Tuple[Optional[BBGTObject], Optional[BBGTObject]]]:
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


def _is_ignored(objects: Sequence[Optional[BBGTObject]], setting: Optional[TrainingSetting]) -> bool:
    present = [o for o in objects if o is not None]
    if any(o.label != CLASS_NAME or o.ignore for o in present):
        return True
    return setting is not None and not any(setting.accepts(o.box_xywh) for o in present)


def _annotation(objects: Sequence[Optional[BBGTObject]], setting: Optional[TrainingSetting]) -> Dict[str, Any]:
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
            annotation[box_key(modality)] = None if obj is None else list(obj.box_xywh)
    return annotation


def read_objects(path: str, annotation_format: str) -> List[BBGTObject]:
    """The objects of one annotation file, with the evaluator's bbGt parser for text files."""
    return read_voc_xml(path) if annotation_format == "voc-xml" else read_bbgt(path)


def load_kaist_dicts(
    image_root: str,
    image_set_file: str,
    annotation_dir: str,
    annotation_format: str,
    setting: Optional[TrainingSetting] = None,
    image_size: Tuple[int, int] = FRAME_SIZE,
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
        images = {FILE_KEYS[m]: image_file(image_root, frame, m) for m in MODALITIES}
        files = annotation_files(frame, annotation_dir, annotation_format)
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
                **images,
                "height": height,
                "width": width,
                "image_id": image_id,
                **dict(zip(FRAME_KEYS, (frame.set_name, frame.video_name, frame.frame_name))),
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
