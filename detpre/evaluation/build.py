"""Which evaluators score a dataset: ``EVALUATOR_REGISTRY``, keyed by the dataset's
``evaluator_type`` metadata (Detectron2's convention: ``MetadataCatalog.get(name).evaluator_type``).

An entry is a function named after the evaluator type, ``(cfg, dataset_name, output_folder) ->
list of DatasetEvaluator``; :func:`build_evaluator` combines what it returns. A new dataset
family registers its own (docs/recipes.md, "Add an evaluator") instead of editing the trainer.
"""

from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator
from detectron2.utils.registry import Registry

from .iou_sweep import COCOIoUSweepEvaluator, PascalVOCIoUSweepEvaluator
from .kaist_evaluation import KAISTEvaluator

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluators by ``evaluator_type``: each entry, named after the type, takes
``(cfg, dataset_name, output_folder)`` and returns the list of DatasetEvaluators that score it.
"""


@EVALUATOR_REGISTRY.register()
def coco(cfg: CfgNode, dataset_name: str, output_folder: str) -> List[DatasetEvaluator]:
    """Detectron2's COCO AP; with ``TEST.IOU_SWEEP`` also AP at IoU 0.1 ... 0.9 beside it."""
    evaluators: List[DatasetEvaluator] = [COCOEvaluator(dataset_name, output_dir=output_folder)]
    if cfg.TEST.IOU_SWEEP:
        evaluators.append(COCOIoUSweepEvaluator(dataset_name, output_dir=output_folder))
    return evaluators


@EVALUATOR_REGISTRY.register()
def coco_panoptic_seg(cfg: CfgNode, dataset_name: str, output_folder: str) -> List[DatasetEvaluator]:
    """Panoptic COCO datasets are scored on their boxes, as ``coco``."""
    return coco(cfg, dataset_name, output_folder)


@EVALUATOR_REGISTRY.register()
def pascal_voc(cfg: CfgNode, dataset_name: str, output_folder: str) -> List[DatasetEvaluator]:
    """Detectron2's VOC AP; with ``TEST.IOU_SWEEP`` also the order-free sweep beside it."""
    evaluators: List[DatasetEvaluator] = [PascalVOCDetectionEvaluator(dataset_name)]
    if cfg.TEST.IOU_SWEEP:
        evaluators.append(PascalVOCIoUSweepEvaluator(dataset_name))
    return evaluators


@EVALUATOR_REGISTRY.register()
def kaist(cfg: CfgNode, dataset_name: str, output_folder: str) -> List[DatasetEvaluator]:
    """The KAIST toolbox's log-average miss rate, every setting."""
    return [KAISTEvaluator(dataset_name, output_dir=output_folder)]


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """The evaluator(s) of ``dataset_name``'s ``evaluator_type``, combined."""
    output_folder = output_folder or f"{cfg.OUTPUT_DIR}/inference/{dataset_name}"
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in EVALUATOR_REGISTRY:
        known = ", ".join(sorted(name for name, _ in EVALUATOR_REGISTRY))
        raise KeyError(
            f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}): register its "
            f"metadata with one of {known}, or register a function of that name in "
            "detpre.evaluation.EVALUATOR_REGISTRY."
        )
    evaluators = EVALUATOR_REGISTRY.get(evaluator_type)(cfg, dataset_name, output_folder)
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
