"""Evaluators: Detectron2 DatasetEvaluators for detpre's datasets and analyses, chosen by the
dataset's ``evaluator_type`` through ``EVALUATOR_REGISTRY``."""

from .build import EVALUATOR_REGISTRY, build_evaluator
from .iou_sweep import APSweep, COCOIoUSweepEvaluator, PascalVOCIoUSweepEvaluator
from .kaist_evaluation import KAISTEvaluator

__all__ = [
    "EVALUATOR_REGISTRY",
    "APSweep",
    "COCOIoUSweepEvaluator",
    "KAISTEvaluator",
    "PascalVOCIoUSweepEvaluator",
    "build_evaluator",
]
