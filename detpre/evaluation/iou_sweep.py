"""Detection AP at every IoU threshold from 0.1 to 0.9, for COCO-format and Pascal VOC data.

*An Analysis of Pre-Training on Object Detection* (Li et al., 2019) argues that what a
pre-training changes is *localization*: detection pre-training helps most at high IoU,
which AP50 / AP75 / AP hide. These evaluators report the whole curve, overall and per class.

The COCO path matches nothing itself: it runs pycocotools' ``COCOeval`` (or Detectron2's
faster port of it) with ``params.iouThrs`` set to the sweep plus COCO's 0.50:0.95, and reads
AP off its ``eval["precision"]`` array. The VOC path applies the rules of Detectron2's
``voc_eval`` (the VOC devkit's matching: greedy by score, ``IoU > t``, "difficult" objects
ignored) to arrays, at every threshold at once, and turns each precision/recall curve into
both the VOC07 11-point AP and the area AP with Detectron2's ``voc_ap``. It does not call
``voc_eval``: that reads scores written with 3 decimals and sorts them with an unstable
sort, so the same detections in another order can move its AP by points; here scores keep
full precision and equal ones follow a documented order (:func:`voc_detection_order`).
"""

import contextlib
import io
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_ap
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..utils.file_io import atomic_write
from .gather import gather_predictions

try:  # Detectron2's C++ port of COCOeval; absent when its ops were not compiled
    from detectron2.evaluation.fast_eval_api import COCOeval_opt
except ImportError:  # pragma: no cover - depends on the Detectron2 build
    COCOeval_opt = None

#: The thresholds of the AP-vs-IoU curve.
IOU_SWEEP: Tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(1, 10))
#: COCO's thresholds, over which "AP" (AP@[0.50:0.95]) is averaged.
COCO_IOUS: Tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _all_thresholds() -> np.ndarray:
    return np.array(sorted(set(IOU_SWEEP) | set(COCO_IOUS)))


@contextlib.contextmanager
def _nan_means_allowed() -> Iterator[None]:
    """A mean over no class with ground truth is NaN by design, not a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _threshold_key(t: float) -> str:
    return f"AP{int(round(t * 100))}"


@dataclass
class APSweep:
    """AP (in %) at each IoU threshold, overall and per class; NaN where undefined.

    ``ap[i]`` is the mean over classes with ground truth of the class APs at
    ``thresholds[i]``; ``ap_coco`` is the same mean of AP averaged over 0.50:0.95.
    """

    thresholds: np.ndarray
    ap: np.ndarray
    ap_coco: float
    per_class: Dict[str, np.ndarray] = field(default_factory=dict)
    per_class_coco: Dict[str, float] = field(default_factory=dict)

    def at(self, iou: float) -> float:
        """Overall AP at threshold ``iou`` (one of ``thresholds``)."""
        idx = np.flatnonzero(np.isclose(self.thresholds, iou))
        if idx.size == 0:
            raise KeyError(f"IoU {iou} is not one of the swept thresholds {self.thresholds.tolist()}")
        return float(self.ap[idx[0]])

    def to_dict(self) -> "OrderedDict[str, float]":
        """Flat ``{metric: value}`` in Detectron2's naming: AP, AP10..AP90, AP-cls, AP10-cls."""
        out: "OrderedDict[str, float]" = OrderedDict(AP=float(self.ap_coco))
        out.update((_threshold_key(t), float(a)) for t, a in zip(self.thresholds, self.ap))
        for name, aps in self.per_class.items():
            out[f"AP-{name}"] = float(self.per_class_coco[name])
            out.update((f"{_threshold_key(t)}-{name}", float(a)) for t, a in zip(self.thresholds, aps))
        return out


def _sweep_from_table(table: np.ndarray, thresholds: np.ndarray, class_names: Sequence[str]) -> APSweep:
    """Build an :class:`APSweep` from ``table[threshold, class]`` (AP in [0, 1], NaN = no gt)."""
    sweep_idx = [int(np.flatnonzero(np.isclose(thresholds, t))[0]) for t in IOU_SWEEP]
    coco_idx = [int(np.flatnonzero(np.isclose(thresholds, t))[0]) for t in COCO_IOUS]
    table = 100.0 * table
    with _nan_means_allowed():
        per_class_coco = np.nanmean(table[coco_idx], axis=0) if len(class_names) else np.array([])
        return APSweep(
            thresholds=np.array(IOU_SWEEP),
            ap=np.nanmean(table[sweep_idx], axis=1),
            ap_coco=float(np.nanmean(per_class_coco)) if len(class_names) else float("nan"),
            per_class={n: table[sweep_idx, k] for k, n in enumerate(class_names)},
            per_class_coco={n: float(per_class_coco[k]) for k, n in enumerate(class_names)},
        )


# --------------------------------------------------------------------------- COCO


def coco_iou_sweep(
    coco_gt: COCO,
    coco_results: List[dict],
    img_ids: Optional[Sequence[int]] = None,
    use_fast_impl: bool = True,
) -> APSweep:
    """Box AP at each IoU of the sweep for COCO-format ``coco_results`` against ``coco_gt``.

    The usual COCO protocol (101-point interpolated precision, area "all", 100 detections
    per image, crowd regions ignored), with only ``params.iouThrs`` changed.
    """
    thresholds = _all_thresholds()
    cat_ids = sorted(coco_gt.getCatIds())
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    if not coco_results:  # COCOeval cannot load an empty result list: AP is 0 where there is gt
        has_gt = [bool(coco_gt.getAnnIds(catIds=[c], imgIds=img_ids or [])) for c in cat_ids]
        table = np.where(has_gt, 0.0, np.nan)[None, :].repeat(len(thresholds), axis=0)
        return _sweep_from_table(table, thresholds, names)
    evaluator_cls = COCOeval_opt if (use_fast_impl and COCOeval_opt is not None) else COCOeval
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
        coco_dt = coco_gt.loadRes(coco_results)
        coco_eval = evaluator_cls(coco_gt, coco_dt, "bbox")
        coco_eval.params.iouThrs = thresholds
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    # precision: [threshold, recall, class, area range (0 = all), max dets (-1 = 100)]
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    valid = precision > -1  # -1: no ground truth of that class
    with _nan_means_allowed():
        table = np.where(valid, precision, 0).sum(axis=1) / valid.sum(axis=1)
    return _sweep_from_table(table, thresholds, names)


class COCOIoUSweepEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` that reports box AP at IoU 0.1..0.9 (and 0.50:0.95) under "bbox_iou".

    Collection of predictions, conversion of the dataset to COCO json and the mapping of
    contiguous class ids back to the dataset's ids are the parent's; only the final
    COCOeval run differs. Use it beside the standard evaluator with ``DatasetEvaluators``.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        use_fast_impl: bool = True,
    ):
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=output_dir,
            use_fast_impl=use_fast_impl,
        )

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> Dict[str, Dict[str, float]]:
        predictions = gather_predictions(self._predictions, self._distributed)
        if predictions is None:
            return {}
        if not self._do_evaluation:  # a test-set json without annotations
            self._logger.info("Annotations are not available for the IoU sweep.")
            return {}
        coco_results = [dict(r) for p in predictions for r in p.get("instances", [])]
        contiguous = self._metadata.get("thing_dataset_id_to_contiguous_id", {})
        to_dataset_id = {v: k for k, v in contiguous.items()}
        if to_dataset_id:
            for r in coco_results:
                r["category_id"] = to_dataset_id[r["category_id"]]
        if not coco_results:
            self._logger.warning(
                "IoU sweep of %s: the model made no detection on any of its %d images: AP is 0 at every IoU.",
                self._metadata.name,
                len(predictions),
            )
        sweep = coco_iou_sweep(self._coco_api, coco_results, img_ids=img_ids, use_fast_impl=self._use_fast_impl)
        results = sweep.to_dict()
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "bbox_iou_sweep.json")) as f:
                json.dump(results, f, indent=1)
        return {"bbox_iou": results}


# ---------------------------------------------------------------------------- VOC


class VOCGroundTruth(NamedTuple):
    """Objects of a VOC-rule evaluation, flat: the position of each object's image in the image
    set, its class index, its box ``x1, y1, x2, y2`` in VOC's inclusive 1-based pixel
    coordinates (floats allowed: the width is ``x2 - x1 + 1``) and its "difficult" flag."""

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray


class VOCDetections(NamedTuple):
    """Detections, flat as :class:`VOCGroundTruth`, with full-precision scores."""

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    score: np.ndarray


def voc_detection_order(dt: VOCDetections) -> np.ndarray:
    """The order in which VOC's greedy matching takes detections: descending score; equal
    scores by the image's position in the image set, then by x1, y1, x2, y2 (ascending).

    The tie order is a function of the detections themselves, not of their position in the
    input, so the same detections in any order give the same AP (detections equal in all of
    these are interchangeable). Detectron2's ``voc_eval`` sorts with NumPy's unstable
    quicksort on scores it wrote with 3 decimals, where ties are common.
    """
    x1, y1, x2, y2 = dt.boxes.T
    return np.lexsort((y2, x2, y1, x1, dt.image, -dt.score))


def _voc_tp_fp(gt: VOCGroundTruth, dt: VOCDetections, thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``voc_eval``'s true / false positive flags, ``[threshold, detection]`` in match order,
    for one class: each detection looks at the object of its image it overlaps most (the
    first in annotation order on equal IoU), taken or not; above ``IoU > t`` it is a true
    positive if that object is free, ignored if it is difficult, a false positive otherwise.
    That object and IoU do not depend on the threshold, so the greedy loop reduces to: the
    first detection above ``t`` on each non-difficult object is its true positive.
    """
    order = voc_detection_order(dt)
    image, boxes = dt.image[order], dt.boxes[order]
    tp = np.zeros((len(thresholds), len(image)))
    fp = np.ones_like(tp)
    if not len(gt.image) or not len(image):
        return tp, fp
    # (n_dt, width): the objects of each detection's image, in annotation order, padded.
    by_image = np.argsort(gt.image, kind="stable")
    count = np.bincount(gt.image, minlength=int(max(image.max(), gt.image.max())) + 1)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    valid = np.arange(count.max()) < count[image][:, None]
    gidx = by_image[np.where(valid, start[image][:, None] + np.arange(count.max()), 0)]
    g, d = gt.boxes[gidx], boxes[:, None, :]
    iw = np.maximum(np.minimum(g[..., 2], d[..., 2]) - np.maximum(g[..., 0], d[..., 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(g[..., 3], d[..., 3]) - np.maximum(g[..., 1], d[..., 1]) + 1.0, 0.0)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)  # noqa: E731
    iou = np.where(valid, inter / (area(d) + area(g) - inter), -np.inf)
    rows = np.arange(len(image))
    best = np.argmax(iou, axis=1)  # the first of equal maxima, as voc_eval's argmax
    best_iou, target = iou[rows, best], gidx[rows, best]
    difficult = gt.difficult[target]
    for i, t in enumerate(thresholds):
        above = best_iou > t
        hits = np.flatnonzero(above & ~difficult)
        first = hits[np.unique(target[hits], return_index=True)[1]]
        tp[i, first] = 1.0
        fp[i, above & difficult] = 0.0
        fp[i, first] = 0.0
    return tp, fp


def voc_iou_sweep(gt: VOCGroundTruth, dt: VOCDetections, class_names: Sequence[str]) -> Dict[str, APSweep]:
    """VOC-rule AP at each IoU of the sweep, as ``{"voc07": 11-point, "voc_area": area}``.

    The rules of the VOC devkit as Detectron2's ``voc_eval`` implements them (greedy by
    score, ``IoU > t`` with the +1 pixel convention, "difficult" objects neither found nor
    missed, AP from ``voc_ap``), computed from arrays rather than its text files: scores keep
    full precision and ties follow :func:`voc_detection_order`, so the result does not depend
    on the order of the detections. Without equal scores it equals ``voc_eval`` on the same
    boxes and scores. Classes without a non-difficult object are NaN.
    """
    thresholds = _all_thresholds()
    tables = {"voc07": np.full((len(thresholds), len(class_names)), np.nan)}
    tables["voc_area"] = tables["voc07"].copy()
    for k in range(len(class_names)):
        in_gt, in_dt = gt.label == k, dt.label == k
        npos = int(np.count_nonzero(in_gt & ~gt.difficult))
        if npos == 0:
            continue  # AP is undefined for a class with no ground truth: stays NaN
        tp, fp = _voc_tp_fp(VOCGroundTruth(*(a[in_gt] for a in gt)), VOCDetections(*(a[in_dt] for a in dt)), thresholds)
        tp, fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
        for i in range(len(thresholds)):
            # voc_eval's curve: eps avoids 0/0 where the first detections hit difficult objects.
            rec, prec = tp[i] / npos, tp[i] / np.maximum(tp[i] + fp[i], np.finfo(np.float64).eps)
            tables["voc_area"][i, k] = voc_ap(rec, prec, use_07_metric=False)
            tables["voc07"][i, k] = voc_ap(rec, prec, use_07_metric=True)
    return {metric: _sweep_from_table(table, thresholds, class_names) for metric, table in tables.items()}


class PascalVOCIoUSweepEvaluator(PascalVOCDetectionEvaluator):
    """VOC-rule AP at IoU 0.1..0.9 and 0.50:0.95 of a Pascal VOC dataset, order-free.

    Both AP definitions are reported whatever the dataset's year: "bbox_iou_voc07"
    (VOC2007's 11-point) and "bbox_iou_voc_area" (VOC2010+'s area under the curve). Run it
    beside Detectron2's :class:`PascalVOCDetectionEvaluator` (``DatasetEvaluators``, as
    ``TEST.IOU_SWEEP`` does), whose "bbox" AP / AP50 / AP75 it leaves alone: the dataset's
    files are read as the parent reads them, but predictions are kept at full precision and
    matched by :func:`voc_iou_sweep`, so that the same detections in another order give
    the same AP.
    """

    def reset(self) -> None:
        # (class index, image id, score, x1, y1, x2, y2) per detection, in VOC's 1-based pixels
        self._detections: List[Tuple] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to(self._cpu_device)
            boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
            boxes[:, :2] += 1  # the inverse of the loader's 0-based xmin/ymin, as the parent does
            for box, score, cls in zip(boxes.tolist(), instances.scores.tolist(), instances.pred_classes.tolist()):
                self._detections.append((cls, inp["image_id"], score, *box))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        detections = gather_predictions(self._detections, distributed=True)
        if detections is None:
            return {}
        with open(self._image_set_path) as f:
            image_names = [line.strip() for line in f if line.strip()]
        position = {name: i for i, name in enumerate(image_names)}
        label = {name: k for k, name in enumerate(self._class_names)}
        objects = [
            (i, obj)
            for i, name in enumerate(image_names)
            for obj in parse_rec(self._anno_file_template.format(name))
            if obj["name"] in label
        ]
        gt = VOCGroundTruth(
            image=np.array([i for i, _ in objects], dtype=np.int64),
            label=np.array([label[obj["name"]] for _, obj in objects], dtype=np.int64),
            boxes=np.array([obj["bbox"] for _, obj in objects], dtype=np.float64).reshape(-1, 4),
            difficult=np.array([bool(obj["difficult"]) for _, obj in objects], dtype=bool),
        )
        unknown = {str(d[1]) for d in detections} - set(position)
        if unknown:
            raise KeyError(
                f"PascalVOCIoUSweepEvaluator: image ids {sorted(unknown)[:5]} are not in {self._image_set_path}."
            )
        dt = VOCDetections(
            image=np.array([position[str(d[1])] for d in detections], dtype=np.int64),
            label=np.array([d[0] for d in detections], dtype=np.int64),
            boxes=np.array([d[3:] for d in detections], dtype=np.float64).reshape(-1, 4),
            score=np.array([d[2] for d in detections], dtype=np.float64),
        )
        sweeps = voc_iou_sweep(gt, dt, self._class_names)
        return {f"bbox_iou_{metric}": sweep.to_dict() for metric, sweep in sweeps.items()}


def coco_voc_iou_sweep(coco_gt: COCO, coco_results: List[dict]) -> Dict[str, APSweep]:
    """VOC-rule sweeps (``{"voc07", "voc_area"}``) for COCO-format ground truth and results.

    A COCO box ``[x, y, w, h]`` (continuous) becomes the VOC box ``(x + 1, y + 1, x + w,
    y + h)``, whose +1-convention width is ``w`` again: IoUs are COCO's, not rounded to the
    pixel (rounding moves AP at IoU 0.9 by points). Crowd objects are "difficult", which VOC
    ignores as COCO ignores crowds; images are in ``getImgIds()`` order for the tie order.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    label = {cat: k for k, cat in enumerate(cat_ids)}
    unknown = {r["category_id"] for r in coco_results} - set(cat_ids)
    if unknown:
        raise ValueError(f"results use category ids {sorted(unknown)} that the ground truth does not define")
    position = {img: i for i, img in enumerate(coco_gt.getImgIds())}

    def voc_boxes(xywh: List[List[float]]) -> np.ndarray:
        x, y, w, h = np.array(xywh, dtype=np.float64).reshape(-1, 4).T
        return np.stack([x + 1, y + 1, x + w, y + h], axis=1)

    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(position)))
    gt = VOCGroundTruth(
        image=np.array([position[a["image_id"]] for a in anns], dtype=np.int64),
        label=np.array([label[a["category_id"]] for a in anns], dtype=np.int64),
        boxes=voc_boxes([a["bbox"] for a in anns]),
        difficult=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
    )
    dt = VOCDetections(
        image=np.array([position[r["image_id"]] for r in coco_results], dtype=np.int64),
        label=np.array([label[r["category_id"]] for r in coco_results], dtype=np.int64),
        boxes=voc_boxes([r["bbox"] for r in coco_results]),
        score=np.array([r["score"] for r in coco_results], dtype=np.float64),
    )
    return voc_iou_sweep(gt, dt, [coco_gt.cats[c]["name"] for c in cat_ids])
