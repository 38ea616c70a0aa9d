"""Box generators for box-domain pre-training, by name (:data:`PROPOSAL_GENERATORS`).

A generator maps an image (H x W x 3 uint8, BGR as :func:`detpre.data.image_io.read_image`
returns it) to N x 4 XYXY boxes in that image's pixels, in an order that is a function of
the pixels alone and that the generator documents: the filter's NMS and top-k keep earlier
boxes first. Registered here:

* ``soco``: SoCo's selective search (:mod:`.selective_search`), AlignDet's generator:
  Felzenszwalb ``scale=300, sigma=0.9, min_size=100``, one colour + texture + size + fill
  grouping; order: initial segments (raster order), then merges in merge order.
* ``opencv_fast`` / ``opencv_quality``: OpenCV contrib's ``ximgproc`` selective search
  (``switchToSelectiveSearchFast`` / ``Quality``: HSV and Lab (and more) images, several
  ``k``, two or four strategies). OpenCV orders its boxes by ``rand() * level`` with C's
  unseeded ``rand()``, so the same image gives another order each call (and per worker);
  its set of boxes is reproducible, so it is re-ordered here by area, smallest first (ties
  by coordinates), which keeps OpenCV's intent of low levels first and is deterministic.

A single-channel frame (thermal) is searched as grey replicated on three channels.

* ``thermal_blobs`` / ``thermal_mser`` (:mod:`.thermal`): pedestrian-shaped boxes of the warm,
  upright blobs of a thermal frame (multi-threshold connected components / MSER of its warm
  contrast); order: decreasing thermal contrast against a ring around the box. They look for
  warmth, so they are registered as *thermal* (:data:`THERMAL_GENERATORS`): a proposal run
  gives them the LWIR frame only.

Another source of boxes (an unsupervised detector) registers itself with
:func:`register_generator`.
"""

from typing import Callable, Dict, Set, Tuple

import cv2
import numpy as np

from .selective_search import soco_selective_search
from .thermal import thermal_blob_proposals, thermal_mser_proposals

__all__ = ["PROPOSAL_GENERATORS", "THERMAL_GENERATORS", "generate", "register_generator", "to_image_pixels"]

Generator = Callable[[np.ndarray], np.ndarray]
#: name -> generator (BGR uint8 image -> N x 4 XYXY float32 boxes, documented order).
PROPOSAL_GENERATORS: Dict[str, Generator] = {}
#: The generators that need a thermal frame (their boxes mean nothing on a colour one).
THERMAL_GENERATORS: Set[str] = set()


def register_generator(name: str, thermal: bool = False) -> Callable[[Generator], Generator]:
    """Register a generator under ``name``; ``thermal``: it only makes sense on a thermal frame."""

    def wrap(fn: Generator) -> Generator:
        if name in PROPOSAL_GENERATORS:
            raise ValueError(f"Proposal generator {name!r} is already registered.")
        PROPOSAL_GENERATORS[name] = fn
        if thermal:
            THERMAL_GENERATORS.add(name)
        return fn

    return wrap


def _three_channels(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image


@register_generator("soco")
def soco(image: np.ndarray) -> np.ndarray:
    return soco_selective_search(np.ascontiguousarray(_three_channels(image)[:, :, ::-1]))


def _opencv(image: np.ndarray, quality: bool) -> np.ndarray:
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(_three_channels(image))
    if quality:
        search.switchToSelectiveSearchQuality()
    else:
        search.switchToSelectiveSearchFast()
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    area = rects[:, 2] * rects[:, 3]
    # lexsort: the last key is the primary one.
    order = np.lexsort((boxes[:, 2], boxes[:, 3], boxes[:, 0], boxes[:, 1], area))
    return boxes[order]


@register_generator("opencv_fast")
def opencv_fast(image: np.ndarray) -> np.ndarray:
    return _opencv(image, quality=False)


@register_generator("opencv_quality")
def opencv_quality(image: np.ndarray) -> np.ndarray:
    return _opencv(image, quality=True)


register_generator("thermal_blobs", thermal=True)(thermal_blob_proposals)
register_generator("thermal_mser", thermal=True)(thermal_mser_proposals)


def generate(name: str, image: np.ndarray, search_size: int = 0) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Boxes of generator ``name`` on ``image``, in the pixels of the searched copy.

    Args:
        search_size: 0 searches the image as it is (SoCo: full resolution); otherwise a copy
            whose longer side is ``search_size`` (smaller or larger) is searched. A generator's
            pixel parameters (SoCo's ``min_size=100``, the filter's 32 px) are then those of
            the copy: searching 128 px demo images at 512 px makes them mean what they mean
            on a COCO image.
    Returns:
        ``(boxes, (height, width) of the searched copy)``; :func:`to_image_pixels` maps the
        boxes back.
    """
    if name not in PROPOSAL_GENERATORS:
        raise KeyError(f"No proposal generator {name!r}; registered: {sorted(PROPOSAL_GENERATORS)}.")
    height, width = image.shape[:2]
    if search_size > 0 and search_size != max(height, width):
        scale = search_size / float(max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interpolation)
    return PROPOSAL_GENERATORS[name](image), image.shape[:2]


def to_image_pixels(boxes: np.ndarray, searched: Tuple[int, int], image: Tuple[int, int]) -> np.ndarray:
    """``boxes`` of a searched copy of size ``searched`` in the pixels of an image of size
    ``image`` (both ``(height, width)``), clipped to it; unchanged when the sizes agree."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if tuple(searched) == tuple(image):
        return boxes
    (hs, ws), (h, w) = searched, image
    scale = np.array([w / ws, h / hs, w / ws, h / hs], dtype=np.float32)
    out = boxes * scale
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out
