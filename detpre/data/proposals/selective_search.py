"""Selective search as SoCo ran it for AlignDet's proposals, written for numpy.

AlignDet's released proposals come from SoCo's ``selective_search/`` (Wei et al., 2021),
itself a lightly modified copy of AlpacaDB's ``selectivesearch`` 0.4: one Felzenszwalb
segmentation (scikit-image's, ``scale=300, sigma=0.9, min_size=100`` on the full-size
image), then one hierarchical grouping under one similarity, the sum of

* colour: intersection of 25-bin histograms of the HSV channels over the range 0-255. The
  image passed is float with 0-255 values, so H and S (in [0, 1]) always fall in bin 0 and
  only V discriminates;
* texture: intersection of 10-bin histograms over 0-255 of the 8-neighbour LBP code of each
  RGB channel (SoCo's range; AlpacaDB 0.4 has 0-1 there, its issue #30);
* size: ``1 - (size_a + size_b) / image area``;
* fill: ``1 - (bbox_ab area - size_a - size_b) / image area``, with the inclusive-corner
  box extents of the implementation (``max - min``).

Two regions are grouped candidates when a corner of the later one (in region order) lies
strictly inside the box of the earlier one: a box test, not pixel adjacency, and one-sided.
The most similar pair is merged until no pair is left (ties: the pair entered last), and
every region is a proposal: the initial segments in the raster order of their first pixel,
then the merges in the order they were made, the whole image last. That is the only order
SoCo defines (there is no score); it is kept, and documented as the rank NMS and top-k use.

:func:`soco_selective_search` reproduces SoCo's output box for box and in the same order
(``tests/data/test_proposals.py`` pins it on reference outputs of SoCo's code): the same
scikit-image calls on the same arrays, histograms binned by the same edges, sums of
histogram minima accumulated left to right as Python's ``sum`` does, the same tie rule. What
changes is speed: region statistics by ``bincount`` instead of a per-pixel Python loop, the
candidate test vectorised, the pair search a heap instead of a sort per merge.
"""

import heapq
from typing import Dict, List, Tuple

import numpy as np

__all__ = ["soco_selective_search"]

_COLOUR_BINS, _TEXTURE_BINS = 25, 10
_HIST_RANGE = (0.0, 255.0)


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    """``numpy.histogram``'s bin of each value for ``bins`` equal bins over 0-255: bin i holds
    ``edges[i] <= v < edges[i + 1]``, the last bin is closed; -1 for values out of range."""
    edges = np.linspace(*_HIST_RANGE, bins + 1)
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = bins - 1
    index[(values < edges[0]) | (values > edges[-1])] = -1
    return index


def _histograms(labels: np.ndarray, channels: np.ndarray, bins: int, sizes: np.ndarray) -> np.ndarray:
    """Per region, the concatenated per-channel histograms, each divided by the region size."""
    n = len(sizes)
    out = np.empty((n, bins * channels.shape[1]), dtype=np.float64)
    for c in range(channels.shape[1]):
        index = _bin_index(channels[:, c], bins)
        valid = index >= 0
        counts = np.bincount(labels[valid] * bins + index[valid], minlength=n * bins).reshape(n, bins)
        out[:, c * bins : (c + 1) * bins] = counts / sizes[:, None]
    return out


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Histogram intersection of rows, summed left to right (``cumsum``: as ``sum`` of a list)."""
    return np.minimum(a, b).cumsum(axis=-1)[..., -1]


def _candidate_pairs(boxes: np.ndarray, chunk: int = 1024) -> List[Tuple[int, int]]:
    """Pairs (a, b), a < b, where a corner of b is strictly inside a's box, in (a, b) order."""
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))

    def inside(rows: slice, px: np.ndarray, py: np.ndarray) -> np.ndarray:  # corner of b (columns) in a (rows)
        return (
            (x0[rows, None] < px[None, :])
            & (px[None, :] < x1[rows, None])
            & (y0[rows, None] < py[None, :])
            & (py[None, :] < y1[rows, None])
        )

    pairs: List[Tuple[int, int]] = []
    for start in range(0, len(boxes), chunk):  # rows a in chunks: memory ~ chunk x N
        rows = slice(start, start + chunk)
        hit = inside(rows, x0, y0) | inside(rows, x1, y1) | inside(rows, x0, y1) | inside(rows, x1, y0)
        a, b = np.nonzero(hit)
        a += start
        later = b > a
        pairs.extend(zip(a[later].tolist(), b[later].tolist()))
    return pairs


class _Regions:
    """Region statistics, growing as regions are merged (index = region id, in output order)."""

    def __init__(self, boxes: np.ndarray, sizes: np.ndarray, colour: np.ndarray, texture: np.ndarray, area: int):
        self.boxes: List[Tuple[int, int, int, int]] = [tuple(int(v) for v in b) for b in boxes]
        self.sizes: List[int] = [int(s) for s in sizes]
        self.colour: List[np.ndarray] = list(colour)
        self.texture: List[np.ndarray] = list(texture)
        self.area = area

    def similarity(self, a: int, b: int) -> float:
        ba, bb = self.boxes[a], self.boxes[b]
        sa, sb = self.sizes[a], self.sizes[b]
        box_area = (max(ba[2], bb[2]) - min(ba[0], bb[0])) * (max(ba[3], bb[3]) - min(ba[1], bb[1]))
        colour = float(_intersection(self.colour[a], self.colour[b]))
        texture = float(_intersection(self.texture[a], self.texture[b]))
        size = 1.0 - (sa + sb) / self.area
        fill = 1.0 - (box_area - sa - sb) / self.area
        return colour + texture + size + fill

    def merge(self, a: int, b: int) -> int:
        ba, bb = self.boxes[a], self.boxes[b]
        sa, sb = self.sizes[a], self.sizes[b]
        total = sa + sb
        self.boxes.append((min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3])))
        self.sizes.append(total)
        self.colour.append((self.colour[a] * sa + self.colour[b] * sb) / total)
        self.texture.append((self.texture[a] * sa + self.texture[b] * sb) / total)
        return len(self.sizes) - 1


def _initial_regions(image_rgb: np.ndarray, scale: float, sigma: float, min_size: int) -> Tuple[np.ndarray, _Regions]:
    from skimage.color import rgb2hsv
    from skimage.feature import local_binary_pattern
    from skimage.segmentation import felzenszwalb
    from skimage.util import img_as_float

    segments = felzenszwalb(img_as_float(image_rgb), scale=scale, sigma=sigma, min_size=min_size)
    height, width = segments.shape
    flat = segments.ravel()
    # Regions are numbered in the raster order of their first pixel, as SoCo's dict fills.
    _, first = np.unique(flat, return_index=True)
    order = np.argsort(first, kind="stable")
    relabel = np.empty(len(order), dtype=np.int64)
    relabel[order] = np.arange(len(order))
    labels = relabel[flat]
    n = len(order)

    ys, xs = np.divmod(np.arange(flat.size), width)
    by_label = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[by_label], np.arange(n))
    boxes = np.stack(
        [
            np.minimum.reduceat(xs[by_label], starts),
            np.minimum.reduceat(ys[by_label], starts),
            np.maximum.reduceat(xs[by_label], starts),
            np.maximum.reduceat(ys[by_label], starts),
        ],
        axis=1,
    )
    sizes = np.bincount(labels, minlength=n)

    pixels = image_rgb.astype(np.float64)  # SoCo's 0-255 float copy of the image
    hsv = rgb2hsv(pixels).reshape(-1, 3)
    # SoCo passes the 0-255 float copy; scikit-image converts any input to float64 first, so
    # the uint8 image gives the same codes (without the warning about float input).
    lbp = np.stack([local_binary_pattern(image_rgb[:, :, c], 8, 1.0) for c in range(3)], axis=-1).reshape(-1, 3)
    colour = _histograms(labels, hsv, _COLOUR_BINS, sizes)
    texture = _histograms(labels, lbp, _TEXTURE_BINS, sizes)
    return boxes, _Regions(boxes, sizes, colour, texture, height * width)


def soco_selective_search(
    image_rgb: np.ndarray, scale: float = 300.0, sigma: float = 0.9, min_size: int = 100
) -> np.ndarray:
    """SoCo's selective search of an RGB uint8 image (defaults: SoCo's parameters).

    Returns:
        N x 4 float32 boxes ``(min_x, min_y, max_x, max_y)`` of every region, in SoCo's order
        (segments, then merges). The extents are inclusive pixel indices, so a box is one pixel
        short of the region on each axis, exactly as SoCo's ``(x, y, max_x - min_x, max_y -
        min_y)`` rects read as COCO ``xywh`` (what AlignDet trains on).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"SoCo's selective search takes an H x W x 3 uint8 image, got {image_rgb.shape} {image_rgb.dtype}."
        )
    boxes, regions = _initial_regions(image_rgb, scale, sigma, min_size)

    # The candidate pairs, each with its similarity and the order it entered SoCo's dict.
    pairs: Dict[Tuple[int, int], int] = {}  # pair -> entry number
    touching: Dict[int, set] = {i: set() for i in range(len(boxes))}
    heap: List[Tuple[float, int, Tuple[int, int]]] = []
    entries = 0

    def enter(pair: Tuple[int, int], similarity: float) -> None:
        nonlocal entries
        if pair in pairs:  # re-entering keeps the dict position (and the value is the same)
            return
        pairs[pair] = entries
        for r in pair:
            touching.setdefault(r, set()).add(pair)
        heapq.heappush(heap, (-similarity, -entries, pair))
        entries += 1

    for pair in _candidate_pairs(boxes):
        enter(pair, regions.similarity(*pair))

    while pairs:
        _, _, best = heapq.heappop(heap)
        if best not in pairs:
            continue  # removed by an earlier merge
        i, j = best
        merged = regions.merge(i, j)
        # Every pair of i or j leaves, in dict order; their other ends pair with the merge.
        gone = sorted(touching.pop(i, set()) | touching.pop(j, set()), key=pairs.__getitem__)
        for pair in gone:
            del pairs[pair]
            for r in pair:
                if r not in (i, j):
                    touching[r].discard(pair)
        for pair in gone:
            if pair == best:
                continue
            other = pair[1] if pair[0] in (i, j) else pair[0]
            if (merged, other) not in pairs:
                enter((merged, other), regions.similarity(merged, other))
    return np.asarray(regions.boxes, dtype=np.float32).reshape(-1, 4)
