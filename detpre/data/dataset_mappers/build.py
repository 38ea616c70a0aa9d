"""The registry of dataset mappers, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME``."""

from detectron2.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY"]

MAPPER_REGISTRY = Registry("DATASET_MAPPER")
MAPPER_REGISTRY.__doc__ = """
Registry for dataset mappers. A registered mapper is a class with a Detectron2
``@configurable`` constructor, built as ``MAPPER_REGISTRY.get(name)(cfg, is_train)``.
"""
