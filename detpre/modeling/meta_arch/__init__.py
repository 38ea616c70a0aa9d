"""Meta-architectures registered in Detectron2's META_ARCH_REGISTRY."""

from .box_domain_pretrainer import BoxDomainPretrainer  # noqa: F401
from .image_domain_pretrainer import ImageDomainPretrainer  # noqa: F401
