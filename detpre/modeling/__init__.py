"""Models: importing this package registers detpre's backbones, ROI heads and meta-architectures."""
from . import backbone, roi_heads  # noqa: F401
from . import meta_arch  # noqa: F401  (registers BoxDomainPretrainer)
