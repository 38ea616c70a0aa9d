"""ROI heads registered in Detectron2's ROI_HEADS_REGISTRY."""

from .cascade_roi_heads import SeededCascadeROIHeads  # noqa: F401
