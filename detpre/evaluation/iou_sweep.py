"""Detection AP at every IoU threshold from 0.1 to 0.9, for COCO-format and Pascal VOC data.

*An Analysis of Pre-Training on Object Detection* (Li et al., 2019) argues that what a
pre-training changes is *localization*: detection pre-training helps most at high IoU,
which AP50 / AP75 / AP hide. These evaluators report the whole curve, overall and per class.

Nothing here matches boxes itself. The COCO path runs pycocotools' ``COCOeval`` (or
Detectron2's faster port of it) with ``params.iouThrs`` set to the sweep plus COCO's
0.50:0.95, and reads AP off its ``eval["precision"]`` array; the VOC path calls
Detectron2's ``voc_eval`` (the VOC devkit's matching: greedy by score, ``IoU > t``,
"difficult" objects ignored) once per threshold and turns each precision/recall curve
into both the VOC07 11-point AP and the area AP with ``voc_ap``.
"""
import contextlib
import io
import json
import os
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_ap, voc_eval
from detectron2.utils import comm
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
                self._metadata.name, len(predictions),
            )
        sweep = coco_iou_sweep(self._coco_api, coco_results, img_ids=img_ids, use_fast_impl=self._use_fast_impl)
        results = sweep.to_dict()
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "bbox_iou_sweep.json")) as f:
                json.dump(results, f, indent=1)
        return {"bbox_iou": results}


# ---------------------------------------------------------------------------- VOC


def voc_iou_sweep(
    det_file_template: str,
    anno_file_template: str,
    image_set_path: str,
    class_names: Sequence[str],
) -> Dict[str, APSweep]:
    """VOC-rule AP at each IoU of the sweep, as ``{"voc07": 11-point, "voc_area": area}``.

    The files are the ones Detectron2's ``voc_eval`` reads: ``det_file_template.format(cls)``
    holds "image_id score x1 y1 x2 y2" lines (1-based VOC pixels), ``anno_file_template``
    the VOC xml of each image named in ``image_set_path``.
    """
    thresholds = _all_thresholds()
    with open(image_set_path) as f:
        image_names = [line.strip() for line in f if line.strip()]
    positives = defaultdict(int)  # class -> non-difficult objects; voc_eval divides by it
    for name in image_names:
        for obj in parse_rec(anno_file_template.format(name)):
            positives[obj["name"]] += not obj["difficult"]
    tables = {"voc07": np.full((len(thresholds), len(class_names)), np.nan)}
    tables["voc_area"] = tables["voc07"].copy()
    for k, cls in enumerate(class_names):
        if positives[cls] == 0:
            continue  # AP is undefined for a class with no ground truth: stays NaN
        for i, t in enumerate(thresholds):
            rec, prec, ap_area = voc_eval(
                det_file_template,
                anno_file_template,
                image_set_path,
                cls,
                ovthresh=float(t),
                use_07_metric=False,
            )
            tables["voc_area"][i, k] = ap_area
            tables["voc07"][i, k] = voc_ap(rec, prec, use_07_metric=True)
    return {metric: _sweep_from_table(table, thresholds, class_names) for metric, table in tables.items()}


class PascalVOCIoUSweepEvaluator(PascalVOCDetectionEvaluator):
    """:class:`PascalVOCDetectionEvaluator` reporting AP at IoU 0.1..0.9 and 0.50:0.95.

    Both AP definitions are reported whatever the dataset's year: "bbox_iou_voc07"
    (VOC2007's 11-point) and "bbox_iou_voc_area" (VOC2010+'s area under the curve).
    Predictions are collected by the parent's ``process`` and matched by ``voc_eval``.
    """

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return {}
        lines = defaultdict(list)
        for per_rank in all_predictions:
            for cls_id, cls_lines in per_rank.items():
                lines[cls_id].extend(cls_lines)
        with tempfile.TemporaryDirectory(prefix="voc_iou_sweep_") as tmp:
            template = os.path.join(tmp, "{}.txt")
            for cls_id, cls_name in enumerate(self._class_names):
                with open(template.format(cls_name), "w") as f:
                    f.write("\n".join(lines.get(cls_id, [])))
            sweeps = voc_iou_sweep(
                template, self._anno_file_template, self._image_set_path, self._class_names
            )
        return {f"bbox_iou_{metric}": sweep.to_dict() for metric, sweep in sweeps.items()}


def coco_voc_iou_sweep(coco_gt: COCO, coco_results: List[dict]) -> Dict[str, APSweep]:
    """VOC-rule sweeps (``{"voc07", "voc_area"}``) for COCO-format ground truth and results.

    The ground truth is written as VOC xml (integer 1-based pixel boxes, as the VOC devkit
    requires: COCO boxes are rounded to the pixel; crowd boxes become "difficult", which
    VOC ignores as COCO ignores crowds), detections in the devkit's text format, and
    :func:`voc_iou_sweep` runs on those files. Classes are written as ``c<index>`` so that
    any category name is a safe file name.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    tag = {cat: f"c{k}" for k, cat in enumerate(cat_ids)}
    unknown = {r["category_id"] for r in coco_results} - set(cat_ids)
    if unknown:
        raise ValueError(f"results use category ids {sorted(unknown)} that the ground truth does not define")
    with tempfile.TemporaryDirectory(prefix="coco_as_voc_") as tmp:
        anno_template = os.path.join(tmp, "{}.xml")
        image_set = os.path.join(tmp, "images.txt")
        for img_id in coco_gt.getImgIds():
            root = ET.Element("annotation")
            for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id])):
                x, y, w, h = ann["bbox"]
                obj = ET.SubElement(root, "object")
                fields = {
                    "name": tag[ann["category_id"]],
                    "pose": "Unspecified",
                    "truncated": 0,
                    "difficult": int(ann.get("iscrowd", 0)),
                }
                for key, value in fields.items():
                    ET.SubElement(obj, key).text = str(value)
                box = ET.SubElement(obj, "bndbox")
                corners = (round(x) + 1, round(y) + 1, round(x + w), round(y + h))
                for key, value in zip(("xmin", "ymin", "xmax", "ymax"), corners):
                    ET.SubElement(box, key).text = str(value)
            ET.ElementTree(root).write(anno_template.format(img_id))
        with open(image_set, "w") as f:
            f.write("\n".join(str(i) for i in coco_gt.getImgIds()))
        det_template = os.path.join(tmp, "{}.txt")
        by_class = defaultdict(list)
        for r in coco_results:
            x, y, w, h = r["bbox"]
            by_class[tag[r["category_id"]]].append(
                f"{r['image_id']} {r['score']:.6f} {x + 1:.2f} {y + 1:.2f} {x + w:.2f} {y + h:.2f}"
            )
        for cat in cat_ids:
            with open(det_template.format(tag[cat]), "w") as f:
                f.write("\n".join(by_class[tag[cat]]))
        sweeps = voc_iou_sweep(det_template, anno_template, image_set, [tag[c] for c in cat_ids])
    parse_rec.cache_clear()  # its cache is keyed by path, and these files are gone
    names = {tag[c]: coco_gt.cats[c]["name"] for c in cat_ids}
    for sweep in sweeps.values():
        sweep.per_class = {names[t]: v for t, v in sweep.per_class.items()}
        sweep.per_class_coco = {names[t]: v for t, v in sweep.per_class_coco.items()}
    return sweeps
