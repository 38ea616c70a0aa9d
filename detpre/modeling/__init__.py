"""Models: importing this package registers detpre's backbones, ROI heads and meta-architectures."""
from . import backbone, roi_heads  # noqa: F401
