"""Evaluators: Detectron2 DatasetEvaluators for detpre's datasets and analyses."""

from .iou_sweep import APSweep, COCOIoUSweepEvaluator, PascalVOCIoUSweepEvaluator  # noqa: F401
from .kaist_evaluation import KAISTEvaluator  # noqa: F401
