"""Training annotations checked before the first batch: a bad box is named or skipped, never
trained on silently.

Detectron2 trusts its dataset dicts: a box of zero size reaches the loss as a degenerate
target (``Boxes.nonempty`` drops it only after the transform, without a word), a box lying
wholly outside its image becomes an empty box after clipping, and a NaN coordinate turns
into a NaN loss thousands of iterations later, far from the file that caused it. So the
training dicts pass through :func:`check_dataset_dicts` once, when the loader is built:

* a coordinate that is not a finite number, a missing ``bbox``, or ``bbox_mode`` missing:
  an error naming the image and the annotation (the annotation file is wrong);
* a box of zero (or negative) width or height, or one outside its image: dropped, with one
  warning per dataset that counts them and names the first images;

then images left without a usable box are filtered as Detectron2 does
(``DATALOADER.FILTER_EMPTY_ANNOTATIONS``), after the drop, so that an image whose every box
was degenerate is not trained on as pure background by accident.
"""

import logging
import math
from typing import Any, Dict, List, Sequence

from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = ["AnnotationError", "check_dataset_dicts", "is_trainable"]

_SHOWN = 5  # images named in a warning


class AnnotationError(ValueError):
    """An annotation that cannot be trained on; the message names the image and the box."""


def _xyxy(annotation: Dict[str, Any], record: Dict[str, Any], index: int) -> List[float]:
    where = f"{record.get('file_name', '<no file_name>')} (image_id {record.get('image_id')!r}), annotation {index}"
    if "bbox" not in annotation or "bbox_mode" not in annotation:
        raise AnnotationError(f"{where}: needs 'bbox' and 'bbox_mode', has {sorted(annotation)}.")
    box = annotation["bbox"]
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: 'bbox' must be 4 numbers, got {box!r}.") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise AnnotationError(f"{where}: 'bbox' must be 4 finite numbers, got {box!r}.")
    try:
        return list(BoxMode.convert(values, BoxMode(annotation["bbox_mode"]), BoxMode.XYXY_ABS))
    except (ValueError, TypeError, NotImplementedError) as e:
        raise AnnotationError(f"{where}: bbox_mode {annotation['bbox_mode']!r} is not usable here ({e}).") from None


def _usable(xyxy: Sequence[float], width: float, height: float) -> bool:
    """Positive area, and some of it inside the image."""
    x0, y0, x1, y1 = xyxy
    return x1 > x0 and y1 > y0 and x1 > 0 and y1 > 0 and x0 < width and y0 < height


def is_trainable(record: Dict[str, Any]) -> bool:
    """Whether the training loader keeps this image: after :func:`check_dataset_dicts` it
    still has a non-crowd box, so Detectron2's ``filter_images_with_only_crowd_annotations``
    (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, on by default) does not drop it. Decided from
    the dict alone, without reading the image; raises as :func:`check_dataset_dicts` does on
    a broken box it looks at."""
    width, height = record.get("width", math.inf), record.get("height", math.inf)
    return any(
        a.get("iscrowd", 0) == 0 and _usable(_xyxy(a, record, i), width, height)
        for i, a in enumerate(record.get("annotations") or [])
    )


def check_dataset_dicts(dicts: List[Dict[str, Any]], dataset_names: Sequence[str]) -> List[Dict[str, Any]]:
    """The dicts with unusable boxes removed (see the module docstring); raises on broken ones.

    Records are copied only where a box is dropped; images without ``height``/``width`` are
    checked for finite, positive-size boxes only.
    """
    dropped, images = 0, []
    out = []
    for record in dicts:
        annotations = record.get("annotations")
        if not annotations:
            out.append(record)
            continue
        width, height = record.get("width", math.inf), record.get("height", math.inf)
        keep = [a for i, a in enumerate(annotations) if _usable(_xyxy(a, record, i), width, height)]
        if len(keep) != len(annotations):
            dropped += len(annotations) - len(keep)
            images.append(record.get("file_name", record.get("image_id")))
            record = dict(record, annotations=keep)
        out.append(record)
    if dropped:
        shown = ", ".join(str(f) for f in images[:_SHOWN]) + (" ..." if len(images) > _SHOWN else "")
        logger.warning(
            "Skipped %d boxes of zero size or outside their image in %d images of %s: %s",
            dropped,
            len(images),
            ", ".join(dataset_names),
            shown,
        )
    return out
