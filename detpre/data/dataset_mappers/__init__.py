"""Dataset mappers, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME`` through ``MAPPER_REGISTRY``;
importing this package registers detpre's."""

from .build import MAPPER_REGISTRY
from .multispectral_mapper import MultispectralDatasetMapper
from .two_crop_mapper import TwoCropDatasetMapper
from .two_view_mapper import TwoViewDatasetMapper

__all__ = ["MAPPER_REGISTRY", "MultispectralDatasetMapper", "TwoCropDatasetMapper", "TwoViewDatasetMapper"]
