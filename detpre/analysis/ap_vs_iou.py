"""AP at IoU 0.1 ... 0.9 of several models' COCO result files, for ``tools/ap_vs_iou.py``.

A model is given as ``[NAME=]PATH``: a COCO results json, or a Detectron2 inference folder
(``OUTPUT_DIR/inference`` or ``OUTPUT_DIR/inference/<dataset>``, holding
``coco_instances_results.json`` and, for datasets that are not COCO jsons, the
``*_coco_format.json`` COCOEvaluator writes beside it). Without NAME a model is named after
its run folder, the one holding ``inference/``, so that two runs evaluated on the same
dataset keep two names; two models of one name are an error.
"""

import contextlib
import io
import json
import os
from dataclasses import dataclass
from glob import glob
from typing import Dict, List, Sequence

from pycocotools.coco import COCO

from ..evaluation.iou_sweep import APSweep, coco_iou_sweep, coco_voc_iou_sweep

__all__ = ["ResultsSpec", "evaluate_results", "load_results", "resolve_results"]

RESULTS_FILE = "coco_instances_results.json"
_INFERENCE = "inference"


@dataclass(frozen=True)
class ResultsSpec:
    """One model to evaluate: its name, results json and the ground truth found beside it."""

    name: str
    results: str
    found_gt: str = ""

    @classmethod
    def parse(cls, spec: str) -> "ResultsSpec":
        """``[NAME=]PATH``; a PATH that exists is never split at ``=``."""
        name, path = ("", spec) if os.path.exists(spec) or "=" not in spec else spec.split("=", 1)
        path = os.path.normpath(path)
        gt = ""
        if os.path.isdir(path):
            candidates = glob(os.path.join(path, "*_coco_format.json"))
            gt = candidates[0] if len(candidates) == 1 else ""
            results = os.path.join(path, RESULTS_FILE)
        else:
            results = path
        if not os.path.isfile(results):
            raise FileNotFoundError(f"results {results!r} do not exist (from --results {spec!r})")
        return cls(name or default_name(results), results, gt)


def default_name(results: str) -> str:
    """The run folder of a results file: the folder holding ``inference/``, else the file's folder."""
    parts = os.path.abspath(results).split(os.sep)
    if _INFERENCE in parts[:-1]:
        index = len(parts) - 1 - parts[::-1].index(_INFERENCE)
        if index > 0:
            return parts[index - 1]
    folder = os.path.basename(os.path.dirname(os.path.abspath(results)))
    stem = os.path.splitext(os.path.basename(results))[0]
    return stem if stem != os.path.splitext(RESULTS_FILE)[0] else folder


def resolve_results(specs: Sequence[str]) -> List[ResultsSpec]:
    """Every ``--results`` spec resolved; a name given to two models is an error."""
    resolved = [ResultsSpec.parse(s) for s in specs]
    seen: Dict[str, ResultsSpec] = {}
    for r in resolved:
        if r.name in seen:
            raise ValueError(
                f"two --results are named {r.name!r} ({seen[r.name].results} and {r.results}): "
                "name them, --results NAME=PATH"
            )
        seen[r.name] = r
    return resolved


def load_results(path: str, coco_gt: COCO) -> List[dict]:
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or "bbox" not in r or "score" not in r for r in results
    ):
        raise ValueError(f"{path} is not a COCO box results list (dicts with image_id, category_id, bbox, score)")
    missing = {r.get("image_id") for r in results} - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(
            f"{path} has detections on {len(missing)} image id(s) absent from the ground truth, "
            f"e.g. {sorted(missing, key=str)[:5]}"
        )
    return results


def evaluate_results(gt_path: str, results_path: str, voc: bool) -> Dict[str, APSweep]:
    """``{"coco": sweep}`` plus ``"voc07"`` and ``"voc_area"`` with ``voc``."""
    if not os.path.isfile(gt_path):
        raise FileNotFoundError(f"ground truth {gt_path!r} does not exist")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
    results = load_results(results_path, coco_gt)
    sweeps = {"coco": coco_iou_sweep(coco_gt, results)}
    if voc:
        sweeps.update(coco_voc_iou_sweep(coco_gt, results))
    return sweeps
