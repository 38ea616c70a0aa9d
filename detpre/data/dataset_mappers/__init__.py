"""Dataset mappers, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME`` through ``MAPPER_REGISTRY``."""
from detectron2.utils.registry import Registry

MAPPER_REGISTRY = Registry("DATASET_MAPPER")
MAPPER_REGISTRY.__doc__ = """
Registry for dataset mappers. A registered mapper is a class with a Detectron2
``@configurable`` constructor, built as ``MAPPER_REGISTRY.get(name)(cfg, is_train)``.
"""

from . import multispectral_mapper  # noqa: E402,F401  (registers MultispectralDatasetMapper)
from . import two_view_mapper  # noqa: E402,F401  (registers TwoViewDatasetMapper)
