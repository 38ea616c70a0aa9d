"""KAIST log-average miss rate as a Detectron2 ``DatasetEvaluator``.

The protocol lives in the pure-numpy ``kaisteval`` package (shared with
``tools/kaist_eval.py``); this wrapper only collects predictions, takes the ground truth
from the registered dataset and writes the result file papers exchange.

Ground truth comes from the dataset dicts (``DatasetCatalog.get(name)``), not from the
annotation directory in the metadata: a subset of a KAIST dataset inherits the source's
metadata but not its frames. Each annotation's ``label``, ``occlusion`` and ``iscrowd``
(the file's ignore flag, or any non-``person`` label) become the bbGt fields the protocol
filters on, so the numbers equal those of the CLI on the same frames.

Boxes are written as predicted, without the +1 that ``kaist_eval_full.m``'s ``aggreg_dets``
adds to the 0-based corners of per-frame detector outputs: detpre trains on the bbGt
coordinates as they are (``detpre.data.datasets.kaist``), so its predictions already live in
the annotations' frame.
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode

from kaisteval import BBGTObject, Detections, Frame, GroundTruth, evaluate
from kaisteval.detections import format_detections, parse_detections

from ..data.datasets.kaist import frame_of_record
from ..utils.file_io import atomic_write
from .gather import gather_predictions

__all__ = ["KAISTEvaluator", "ground_truth_from_dicts"]

logger = logging.getLogger(__name__)

DETECTIONS_FILE = "kaist_detections.txt"
RESULTS_FILE = "kaist_results.json"


def _objects(record: Dict[str, Any]) -> List[BBGTObject]:
    objects = []
    for ann in record.get("annotations", []):
        x, y, w, h = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
        objects.append(
            BBGTObject(
                label=ann.get("label", "person"),
                x=float(x),
                y=float(y),
                w=float(w),
                h=float(h),
                occlusion=int(ann.get("occlusion", 0)),
                ignore=int(ann.get("iscrowd", 0)),
            )
        )
    return objects


def ground_truth_from_dicts(dicts: List[Dict[str, Any]], dataset_name: str) -> Tuple[List[Frame], GroundTruth]:
    """Frames (in dataset order) and ground truth of Detectron2 KAIST dataset dicts."""
    try:
        frames = [frame_of_record(d) for d in dicts]
    except KeyError as e:
        raise KeyError(f"KAISTEvaluator: dataset {dataset_name!r}: {e.args[0]}") from None
    return frames, GroundTruth.from_objects([_objects(d) for d in dicts])


class KAISTEvaluator(DatasetEvaluator):
    """Log-average miss rate (MR^-2, in %) of every ``kaist_eval_full.m`` setting.

    Returns ``{"kaist": {"MR_all", "MR_day", "MR_night", "MR_near", ...}}``, one key per
    setting of ``kaisteval.protocol.SETTINGS`` (NaN where a setting has no frame or no person).
    With ``output_dir``, also writes ``kaist_detections.txt`` (``frame,x,y,w,h,score``, frames 1-based in dataset order:
    the file other KAIST tools and papers' result sets use) and ``kaist_results.json``.
    The numbers are computed from that text (4 decimals), so re-running
    ``tools/kaist_eval.py`` on the file gives them back exactly.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._cpu_device = torch.device("cpu")
        self._predictions: List[Tuple[Any, np.ndarray, np.ndarray]] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to(self._cpu_device)
            xyxy = instances.pred_boxes.tensor.numpy().astype(np.float64)
            xywh = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).reshape(-1, 4)
            self._predictions.append((inp["image_id"], xywh, instances.scores.numpy().astype(np.float64)))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        predictions = gather_predictions(self._predictions, self._distributed)
        if predictions is None:
            return {}

        dicts = DatasetCatalog.get(self._dataset_name)
        frames, gt = ground_truth_from_dicts(dicts, self._dataset_name)
        position = {d["image_id"]: i for i, d in enumerate(dicts)}
        unknown = [p[0] for p in predictions if p[0] not in position]
        if unknown:
            raise KeyError(f"KAISTEvaluator: image_id {unknown[0]!r} is not in dataset {self._dataset_name!r}.")
        detections = Detections(
            frame=np.concatenate(
                [np.full(len(s), position[i], dtype=np.int64) for i, _, s in predictions] + [np.zeros(0, np.int64)]
            ),
            boxes=np.concatenate([b for _, b, _ in predictions] + [np.zeros((0, 4))]),
            scores=np.concatenate([s for _, _, s in predictions] + [np.zeros(0)]),
        )
        if len(detections) == 0:
            logger.warning(
                "KAISTEvaluator: the model made no detection on any of the %d frames of %s: every miss rate is 100%%.",
                len(frames),
                self._dataset_name,
            )
        text = format_detections(detections)
        results = evaluate(gt, frames, parse_detections(text, DETECTIONS_FILE, len(frames), "txt"))

        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, DETECTIONS_FILE)) as f:
                f.write(text)
            with atomic_write(os.path.join(self._output_dir, RESULTS_FILE)) as f:
                json.dump({name: r.to_dict() for name, r in results.items()}, f, indent=2)
        summary = OrderedDict((r.key, 100.0 * r.mr) for r in results.values())
        logger.info(
            "KAIST log-average miss rate on %s (%d frames, %d detections): %s",
            self._dataset_name,
            len(frames),
            len(detections),
            ", ".join(f"{k} {v:.2f}%" for k, v in summary.items()),
        )
        return OrderedDict(kaist=summary)
