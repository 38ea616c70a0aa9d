"""Models: importing this package registers detpre's backbones, ROI heads and meta-architectures."""

from . import (  # noqa: F401
    backbone,
    meta_arch,  # noqa: F401  (registers BoxDomainPretrainer, ImageDomainPretrainer)
    roi_heads,
)
