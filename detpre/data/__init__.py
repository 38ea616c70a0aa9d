"""Datasets (registered in Detectron2's DatasetCatalog on import) and dataset mappers."""
from . import datasets, dataset_mappers  # noqa: F401
