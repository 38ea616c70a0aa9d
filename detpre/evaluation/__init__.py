"""Evaluators: Detectron2 DatasetEvaluators for detpre's datasets and analyses."""
