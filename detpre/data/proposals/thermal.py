"""Pedestrian proposals from the warm, upright blobs of a thermal (LWIR) frame, without labels.

In a long-wave infrared frame a person is warmer than most of what surrounds it (skin and
clothing near 30 C against a road, a wall or the night sky), narrow and taller than wide.
Selective search, made for colour and texture, barely sees that (docs/kaist_proposals.md).
Two sources share one pipeline and differ only in how they cut blobs out of the frame:

1. **Warm contrast** (:func:`warm_contrast`). The frame as grey, blurred by a Gaussian of
   sigma 1 px (JPEG blocks and sensor noise would fragment blobs; the narrowest pedestrian a
   KAIST preset keeps, 20 px tall, is 8 px wide and survives it), minus its opening by a
   horizontal line as wide as the widest standard pedestrian that fits the frame
   (``0.41 x frame height``, Dollar et al.'s w/h): a white top-hat. It removes every warm
   structure wider than a person (a sunlit road, a wall, a car body, a sky gradient) and keeps
   narrower ones measured against the background beside them, so that one set of thresholds
   means the same by day and by night. It is then stretched to 0-255 by its 99.9th
   percentile (the hottest few hundred pixels of a 640 x 512 frame, a lamp, saturate
   instead of compressing the rest).
2. **Blobs.** ``thermal_blobs`` (:func:`threshold_blobs`): the connected components of the
   warm contrast above 15 thresholds, one every 1/16 of its range: a cut of its component
   tree at 15 levels, so that a person is a component of its own at some level between the
   background beside it and its own warmth, even where it touches a warmer object.
   ``thermal_mser`` (:func:`mser_blobs`): OpenCV's maximally stable extremal regions of the
   warm contrast, bright regions only, with OpenCV's own stability settings (``delta`` 5 and
   ``max_variation`` 0.25 are set for an 8-bit image using its full range, which the stretch
   makes it), the areas bounded as below.
3. **Pedestrian boxes** (:func:`pedestrian_boxes`). A blob at least 7 px tall, of at least
   20 px, and no wider than tall (a person, or its head, is upright) gives boxes of Dollar et
   al.'s standard pedestrian shape, ``w = 0.41 h`` (PAMI 2012), centred on the blob's
   centroid, from its top down, ``1, 2^(1/2), 2, ..., 8`` times its height (7 boxes). The
   warmest part of a person in LWIR is the exposed skin: often the head alone stands out
   (clothing insulates; the legs are near the ground's temperature), sometimes head and
   trunk, sometimes the whole body. With Drillis and Contini's body-segment lengths (1966;
   fractions of the stature H: chin 0.870 H above the floor, hip joint 0.530 H) the blob is
   ``H`` (the whole person), ``0.47 H`` (down to the hips: 2.1 blob heights) or ``0.13 H``
   (the head: 7.7 blob heights), hence the range 1 to 8. The step ``2^(1/2)`` is the coarsest
   geometric step at which every person height in that range is within ``2^(1/4)`` of a
   box's: IoU ``2^(-1/2) = 0.71`` for the same shape, top and centre, so a blob of the right
   part never misses the 0.7 criterion by its scale. 7 px is the head of the protocol's
   smallest "reasonable" pedestrian (0.13 x 55 px) and 20 px about its area (a 7 x 4.5 px
   ellipse is 25 px, less a blurred rim): a smaller blob is not the head of a "reasonable"
   pedestrian, nor a whole person of the preset's 20 px, and little more than noise after
   the blur.
4. **Score** (:func:`ring_contrast`): the signal-to-clutter ratio of infrared target
   detection, ``(mean inside - mean of a ring around the box) / std of the ring``, the ring
   reaching half the box's width beyond each side, on the blurred frame (not the top-hat:
   a score of the frame itself, which a later reader can check against the image). The
   standard deviation is floored at one grey level (the 8-bit quantisation step), so that a
   flat surround (the clear night sky) does not make the ratio infinite. Boxes not warmer
   than their ring (score <= 0) are dropped: they are not warm objects. The rest is sorted
   by decreasing score, ties by coordinates; duplicates (the same blob at several
   thresholds) are removed first.

Every step is a function of the pixels alone (no randomness, no threads that change the
result), so the same frame gives the same boxes in the same order.
"""

from typing import Tuple

import cv2
import numpy as np

__all__ = [
    "PEDESTRIAN_ASPECT",
    "mser_blobs",
    "pedestrian_boxes",
    "ring_contrast",
    "thermal_blob_proposals",
    "thermal_mser_proposals",
    "threshold_blobs",
    "warm_contrast",
]

#: Dollar et al.'s standard pedestrian box, w / h (Caltech; CityPersons uses the same).
PEDESTRIAN_ASPECT = 0.41
#: Box heights per blob, in blob heights: the whole person (1), head and trunk (2), the head (8).
EXTENSIONS = tuple(2.0 ** (k / 2.0) for k in range(7))
#: Blur (px) before the top-hat.
BLUR_SIGMA = 1.0
#: Percentile of the warm contrast that the stretch maps to 255.
STRETCH_PERCENTILE = 99.9
#: Thresholds of ``thermal_blobs``: 16, 32, ..., 240 of the stretched warm contrast.
THRESHOLDS = tuple(range(16, 256, 16))
#: The head of a 55 px ("reasonable") pedestrian, and about its area (step 3).
MIN_BLOB_HEIGHT = 7
MIN_BLOB_AREA = 20
#: The ring reaches this fraction of the box's width beyond each side.
RING_MARGIN = 0.5
#: Floor of the ring's standard deviation (grey levels of the 8-bit frame).
MIN_RING_STD = 1.0


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"A thermal frame must be uint8, got {image.dtype}.")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # KAIST's LWIR JPEGs: 3 equal channels
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 2:
        return image
    raise ValueError(f"A thermal frame is H x W or H x W x 1/3, got shape {image.shape}.")


def warm_contrast(grey: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(blurred frame, stretched warm contrast)``, both uint8 (step 1 of the module docstring)."""
    blurred = cv2.GaussianBlur(grey, (0, 0), BLUR_SIGMA)
    width = int(PEDESTRIAN_ASPECT * grey.shape[0]) | 1  # odd: centred on each pixel
    tophat = cv2.morphologyEx(blurred, cv2.MORPH_TOPHAT, np.ones((1, width), np.uint8))
    top = float(np.percentile(tophat, STRETCH_PERCENTILE))
    if top <= 0:
        return blurred, np.zeros_like(tophat)
    stretched = np.minimum(tophat.astype(np.float32) * np.float32(255.0 / top), 255.0)
    return blurred, stretched.astype(np.uint8)


def threshold_blobs(contrast: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """Connected components (8-connected) of ``contrast >= t`` for each threshold, as rows
    ``(x, y, w, h, area, centroid x)`` in pixels (x, y: top-left pixel)."""
    rows = []
    for t in thresholds:
        count, _, stats, centroids = cv2.connectedComponentsWithStats((contrast >= t).view(np.uint8), connectivity=8)
        if count > 1:  # label 0 is the background
            rows.append(np.concatenate([stats[1:], centroids[1:, :1]], axis=1).astype(np.float64))
    return np.concatenate(rows) if rows else np.zeros((0, 6))


def mser_blobs(contrast: np.ndarray) -> np.ndarray:
    """OpenCV's MSER bright regions of ``contrast``, as :func:`threshold_blobs`' rows."""
    height = contrast.shape[0]
    max_area = int(PEDESTRIAN_ASPECT * height * height)  # the standard box of the frame's height
    mser = cv2.MSER_create(5, MIN_BLOB_AREA, max(max_area, MIN_BLOB_AREA + 1), 0.25)
    mser.setPass2Only(True)  # the inverted pass only: bright (warm) regions on darker ones
    regions, rects = mser.detectRegions(contrast)
    if len(regions) == 0:
        return np.zeros((0, 6))
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    area = np.array([len(r) for r in regions], dtype=np.float64)
    centroid = np.array([r[:, 0].mean() for r in regions], dtype=np.float64)
    return np.concatenate([rects, area[:, None], centroid[:, None]], axis=1)


def pedestrian_boxes(blobs: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """Boxes of the standard pedestrian shape for each upright blob (step 3), XYXY clipped
    to the ``(height, width)`` frame, duplicates removed (rows in sorted order)."""
    x, y, w, h, area, cx = np.asarray(blobs, dtype=np.float64).reshape(-1, 6).T
    upright = (h >= MIN_BLOB_HEIGHT) & (area >= MIN_BLOB_AREA) & (w <= h)
    y, h, cx = y[upright], h[upright], cx[upright] + 0.5  # + 0.5: pixel centres
    heights = h[:, None] * np.asarray(EXTENSIONS)[None, :]
    half = PEDESTRIAN_ASPECT * heights / 2.0
    top = np.broadcast_to(y[:, None], heights.shape)
    boxes = np.stack([cx[:, None] - half, top, cx[:, None] + half, top + heights], axis=-1).reshape(-1, 4)
    frame_h, frame_w = image_size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, frame_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, frame_h)
    boxes = boxes.astype(np.float32)
    return np.unique(boxes, axis=0) if len(boxes) else boxes.reshape(0, 4)


def _box_sums(integral: np.ndarray, x0, y0, x1, y1) -> np.ndarray:
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def ring_contrast(grey: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The signal-to-clutter ratio of each box (step 4): ``(mean inside - mean of the ring) /
    max(std of the ring, 1)``; -inf where the ring is empty (a box covering the frame)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = grey.shape[:2]
    sums, squares = cv2.integral2(grey, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
    margin = RING_MARGIN * (boxes[:, 2] - boxes[:, 0])
    # Whole pixels, at least one inside, the ring's box around the inner one, both in the frame.
    inner = np.round(boxes).astype(np.int64)
    inner[:, 0] = inner[:, 0].clip(0, width - 1)
    inner[:, 1] = inner[:, 1].clip(0, height - 1)
    inner[:, 2] = np.maximum(inner[:, 2].clip(0, width), inner[:, 0] + 1)
    inner[:, 3] = np.maximum(inner[:, 3].clip(0, height), inner[:, 1] + 1)
    outer = np.round(boxes + np.stack([-margin, -margin, margin, margin], axis=1)).astype(np.int64)
    outer[:, :2] = np.minimum(outer[:, :2].clip(0, None), inner[:, :2])
    outer[:, 2] = np.maximum(outer[:, 2].clip(None, width), inner[:, 2])
    outer[:, 3] = np.maximum(outer[:, 3].clip(None, height), inner[:, 3])
    area_in = np.prod(inner[:, 2:] - inner[:, :2], axis=1).astype(np.float64)
    area_out = np.prod(outer[:, 2:] - outer[:, :2], axis=1).astype(np.float64)
    sum_in, sum_out = _box_sums(sums, *inner.T), _box_sums(sums, *outer.T)
    sq_ring = _box_sums(squares, *outer.T) - _box_sums(squares, *inner.T)
    ring = area_out - area_in
    score = np.full(len(boxes), -np.inf)
    ok = ring > 0
    mean_ring = (sum_out[ok] - sum_in[ok]) / ring[ok]
    var_ring = np.maximum(sq_ring[ok] / ring[ok] - mean_ring**2, 0.0)
    score[ok] = (sum_in[ok] / area_in[ok] - mean_ring) / np.maximum(np.sqrt(var_ring), MIN_RING_STD)
    return score


def _ranked(blurred: np.ndarray, blobs: np.ndarray) -> np.ndarray:
    """The boxes of ``blobs``, warmer than their ring, by decreasing score (ties: coordinates)."""
    boxes = pedestrian_boxes(blobs, blurred.shape[:2])
    score = ring_contrast(blurred, boxes)
    warm = score > 0
    boxes, score = boxes[warm], score[warm]
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -score))  # last key first
    return boxes[order]


def thermal_blob_proposals(image: np.ndarray) -> np.ndarray:
    """``thermal_blobs``: pedestrian boxes of the multi-threshold warm components of a thermal
    frame (uint8 grey, or 3 equal channels), N x 4 XYXY float32 by decreasing ring contrast."""
    blurred, contrast = warm_contrast(_grey(image))
    return _ranked(blurred, threshold_blobs(contrast))


def thermal_mser_proposals(image: np.ndarray) -> np.ndarray:
    """``thermal_mser``: pedestrian boxes of the warm MSER regions of a thermal frame, as
    :func:`thermal_blob_proposals`."""
    blurred, contrast = warm_contrast(_grey(image))
    return _ranked(blurred, mser_blobs(contrast))
