"""A dataset mapper for aligned visible + thermal (LWIR) frame pairs, such as KAIST's.

Both frames of a sample must see the *same* geometry (resize, flip, crop), or the boxes
drawn on one stop matching the other: the augmentations are drawn once, on the visible
frame, through Detectron2's ``AugmentationList``, and the resulting transform is replayed
on the thermal frame. Photometric augmentation is drawn per modality, since brightness and
contrast of a thermal camera have nothing to do with the colour camera's.

The output is Detectron2's usual dict with one ``image`` tensor whose channels are named
by ``INPUT.FORMAT`` (see :class:`~detpre.data.multispectral.MultispectralFormat`), so any
Detectron2 model whose stem takes ``len(MODEL.PIXEL_MEAN)`` channels trains on it unchanged.
Reading, stacking and the shared geometry are :mod:`detpre.data.multispectral`'s.
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..multispectral import (
    BOX_SOURCES,
    LWIR,
    VISIBLE,
    MultispectralFormat,
    apply_geometry,
    read_frames,
    select_box,
    stack_channels,
)
from .build import MAPPER_REGISTRY

logger = logging.getLogger(__name__)


def _augmentation_list(augmentations: Sequence[T.Augmentation]) -> Optional[T.AugmentationList]:
    return T.AugmentationList(list(augmentations)) if augmentations else None


@MAPPER_REGISTRY.register()
class MultispectralDatasetMapper:
    """Map a KAIST-style dataset dict (``file_name`` = visible frame, ``lwir_file_name``)
    to ``{"image": C x H x W uint8 tensor, "instances": ...}`` for Detectron2 models.

    Ignore regions (``iscrowd=1``: ``people``, ``cyclist``, ``person?``, boxes outside the
    training setting) never become ground truth, as in Detectron2's ``DatasetMapper``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        box_source: str = "union",
        visible_augmentations: Sequence[T.Augmentation] = (),
        lwir_augmentations: Sequence[T.Augmentation] = (),
    ):
        """
        Args:
            augmentations: geometric augmentations, drawn once and applied to both frames.
            image_format: a :class:`MultispectralFormat` string such as ``"BGRT"``.
            box_source: which boxes of paired annotations supervise, one of ``BOX_SOURCES``.
            visible_augmentations, lwir_augmentations: photometric augmentations of each
                frame (training only), applied after the geometric ones.
        """
        if box_source not in BOX_SOURCES:
            raise ValueError(f"INPUT.KAIST.BOX_SOURCE {box_source!r} is not one of {BOX_SOURCES}.")
        self.is_train = is_train
        self.format = MultispectralFormat.parse(image_format)
        self.augmentations = T.AugmentationList(augmentations)
        self.box_source = box_source
        self.visible_augmentations = _augmentation_list(visible_augmentations)
        self.lwir_augmentations = _augmentation_list(lwir_augmentations)
        mode = "training" if is_train else "inference"
        logger.info(
            "[MultispectralDatasetMapper] %s, format %s, boxes from %s; geometric: %s; visible: %s; lwir: %s",
            mode,
            image_format,
            box_source,
            augmentations,
            list(visible_augmentations),
            list(lwir_augmentations),
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        fmt = MultispectralFormat.parse(cfg.INPUT.FORMAT)
        fmt.check_pixel_stats(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT)
        augmentations = utils.build_augmentation(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED and is_train:
            augmentations.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        kaist = cfg.INPUT.KAIST
        visible, lwir = [], []
        if is_train:
            for factors, aug, target in (
                (kaist.VISIBLE_BRIGHTNESS, T.RandomBrightness, visible),
                (kaist.VISIBLE_CONTRAST, T.RandomContrast, visible),
                (kaist.VISIBLE_SATURATION, T.RandomSaturation, visible),
                (kaist.LWIR_BRIGHTNESS, T.RandomBrightness, lwir),
                (kaist.LWIR_CONTRAST, T.RandomContrast, lwir),
            ):
                if tuple(factors) != (1.0, 1.0):
                    target.append(aug(*factors))
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "box_source": kaist.BOX_SOURCE,
            "visible_augmentations": visible,
            "lwir_augmentations": lwir,
        }

    def _photometric(self, frames: Dict[str, np.ndarray]) -> None:
        """Per-modality photometric augmentation, in place, each modality drawing its own."""
        if VISIBLE in frames and self.visible_augmentations is not None:
            # Detectron2's saturation weighs the channels as RGB: augment an RGB view.
            aug_input = T.AugInput(frames[VISIBLE][:, :, ::-1])
            self.visible_augmentations(aug_input)
            frames[VISIBLE] = aug_input.image[:, :, ::-1]
        if LWIR in frames and self.lwir_augmentations is not None:
            aug_input = T.AugInput(frames[LWIR])
            self.lwir_augmentations(aug_input)
            frames[LWIR] = aug_input.image

    def _annotations_to_instances(self, dataset_dict: Dict[str, Any], transforms, image_shape) -> None:
        annotations = []
        for annotation in dataset_dict.pop("annotations"):
            if annotation.get("iscrowd", 0):
                continue
            box = select_box(annotation, self.box_source)
            if box is None:
                continue
            annotation["bbox"] = box
            annotations.append(utils.transform_instance_annotations(annotation, transforms, image_shape))
        instances = utils.annotations_to_instances(annotations, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        frames, transforms = apply_geometry(read_frames(dataset_dict, self.format.modalities), self.augmentations)
        if self.is_train:
            self._photometric(frames)
        image = stack_channels(frames, self.format)
        image_shape = image.shape[1:]
        dataset_dict["image"] = torch.from_numpy(image)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._annotations_to_instances(dataset_dict, transforms, image_shape)
        return dataset_dict
