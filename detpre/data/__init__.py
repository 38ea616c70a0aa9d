"""Datasets (registered in Detectron2's DatasetCatalog on import) and dataset mappers."""

from . import dataset_mappers, datasets  # noqa: F401
