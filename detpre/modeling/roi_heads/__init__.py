"""ROI heads registered in Detectron2's ROI_HEADS_REGISTRY."""
