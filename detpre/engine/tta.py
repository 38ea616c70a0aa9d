"""Test-time augmentation (``TEST.AUG``) for detpre's models, through Detectron2's
``GeneralizedRCNNWithTTA``: the "+ test aug" rows of *Rethinking ImageNet Pre-training*.

Detectron2 ships the wrapper but wires it only into its example ``tools/train_net.py``;
:meth:`detpre.engine.trainer.DetpreTrainer.test_with_TTA` is that function, used by
``--eval-only`` and by the trainer's periodic evaluation. Two things are added here:

* the model is checked up front, so that a config TTA cannot run (a one-stage detector,
  keypoints, precomputed proposals) fails when the run starts, naming the key, not at its
  first evaluation hours later;
* images that are not 1- or 3-channel (KAIST's BGRT) are resized channel by channel: PIL,
  which Detectron2 resizes uint8 images with, takes 4 channels for RGBA and premultiplies
  the alpha (the thermal channel would darken the visible ones), and refuses more.
"""

from typing import Any, Dict, List

import torch
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN, GeneralizedRCNNWithTTA
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import ConfigError

__all__ = ["ChannelwiseDatasetMapperTTA", "build_tta_model", "check_tta_supported"]


class ChannelwiseDatasetMapperTTA(DatasetMapperTTA):
    """Detectron2's ``DatasetMapperTTA`` (``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``) for
    images of any number of channels.

    1- and 3-channel images go through Detectron2's mapper as they are. Others are augmented
    one channel at a time with the same (deterministic) resizes and flips and stacked back,
    as :class:`~detpre.data.dataset_mappers.MultispectralDatasetMapper` resizes each
    modality on its own; PIL resizes an RGB image channel by channel too, so a 3-channel
    group gives the same pixels either way.
    """

    def __call__(self, dataset_dict: Dict[str, Any]) -> List[Dict[str, Any]]:
        image = dataset_dict["image"]
        if image.shape[0] in (1, 3):
            return super().__call__(dataset_dict)
        planes = []
        for c in range(image.shape[0]):
            planes.append(super().__call__(dict(dataset_dict, image=image[c : c + 1])))
        augmented = planes[0]
        for k, out in enumerate(augmented):
            out["image"] = torch.cat([plane[k]["image"] for plane in planes])
        return augmented


def check_tta_supported(cfg: CfgNode, model: nn.Module) -> None:
    """Raise :class:`ConfigError` if ``GeneralizedRCNNWithTTA`` cannot wrap ``model``."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if not isinstance(model, GeneralizedRCNN):
        raise ConfigError(
            f"TEST.AUG.ENABLED: Detectron2's test-time augmentation (GeneralizedRCNNWithTTA) needs a "
            f"GeneralizedRCNN, but MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} builds a "
            f"{type(model).__name__}; set TEST.AUG.ENABLED False."
        )
    for key in ("KEYPOINT_ON", "LOAD_PROPOSALS"):
        if cfg.MODEL[key]:
            raise ConfigError(
                f"TEST.AUG.ENABLED: Detectron2's test-time augmentation does not support MODEL.{key} True."
            )


def build_tta_model(cfg: CfgNode, model: nn.Module) -> GeneralizedRCNNWithTTA:
    """``model`` (bare or in DDP; channels-last or with a compiled backbone alike, as those
    keep it a ``GeneralizedRCNN``) wrapped for test-time augmentation as ``TEST.AUG`` says."""
    check_tta_supported(cfg, model)
    return GeneralizedRCNNWithTTA(cfg, model, tta_mapper=ChannelwiseDatasetMapperTTA(cfg))
