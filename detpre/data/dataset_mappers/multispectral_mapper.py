"""A dataset mapper for aligned visible + thermal (LWIR) frame pairs, such as KAIST's.

Both frames of a sample must see the *same* geometry (resize, flip, crop), or the boxes
drawn on one stop matching the other: the augmentations are drawn once, on the visible
frame, through Detectron2's ``AugmentationList``, and the resulting transform is replayed
on the thermal frame. Photometric augmentation is drawn per modality, since brightness and
contrast of a thermal camera have nothing to do with the colour camera's.

The output is Detectron2's usual dict with one ``image`` tensor whose channels are named
by ``INPUT.FORMAT`` (see :class:`MultispectralFormat`), so any Detectron2 model whose stem
takes ``len(MODEL.PIXEL_MEAN)`` channels trains on it unchanged.
"""

import copy
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from . import MAPPER_REGISTRY

logger = logging.getLogger(__name__)

BOX_SOURCES = ("visible", "lwir", "union", "average")
_FORMAT_RE = re.compile(r"^(?P<visible>BGR|RGB)?(?P<thermal>TTT|T)?$")


@dataclass(frozen=True)
class MultispectralFormat:
    """The channels of a multispectral ``INPUT.FORMAT``: the visible ones, then the thermal.

    ``BGRT``: visible BGR + one thermal channel (4); ``BGRTTT``: visible BGR + the thermal
    frame repeated on 3 channels (6), so that a stream or stem made for RGB can take it
    unchanged; ``RGB*`` likewise with RGB order (torchvision-style weights); ``T``/``TTT``:
    thermal only. Plain ``BGR``/``RGB`` (visible only) is accepted too.
    """

    visible: str  # "BGR", "RGB" or "" (no visible channels)
    thermal_channels: int  # 0, 1 or 3

    @classmethod
    def parse(cls, fmt: str) -> "MultispectralFormat":
        match = _FORMAT_RE.match(fmt or "")
        if not fmt or match is None:
            raise ValueError(
                f"INPUT.FORMAT {fmt!r} is not a multispectral format: expected visible channels "
                "(BGR or RGB) followed by thermal ones (T or TTT), e.g. 'BGRT', 'BGRTTT', 'TTT'."
            )
        return cls(match["visible"] or "", len(match["thermal"] or ""))

    @property
    def visible_channels(self) -> int:
        return 3 if self.visible else 0

    @property
    def channels(self) -> int:
        return self.visible_channels + self.thermal_channels

    def check_pixel_stats(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], fmt: str) -> None:
        """MODEL.PIXEL_MEAN/STD must give one value per channel of the format."""
        for key, values in (("MODEL.PIXEL_MEAN", pixel_mean), ("MODEL.PIXEL_STD", pixel_std)):
            if len(values) != self.channels:
                raise ValueError(
                    f"INPUT.FORMAT {fmt!r} has {self.channels} channels but {key} has "
                    f"{len(values)} values ({list(values)}): give one per channel, visible first."
                )


def select_box(annotation: Dict[str, Any], source: str) -> Optional[List[float]]:
    """The box of a (possibly paired) annotation that supervises training, in its bbox_mode.

    Paired annotations carry ``bbox_visible`` and ``bbox_lwir`` (None where the object is
    not annotated in that modality); other annotations have only ``bbox``, used as is.
    Returns None when the chosen modality has no box for the object.
    """
    if "bbox_visible" not in annotation and "bbox_lwir" not in annotation:
        return annotation["bbox"]
    visible, lwir = annotation.get("bbox_visible"), annotation.get("bbox_lwir")
    if source in ("visible", "lwir"):
        return visible if source == "visible" else lwir
    if visible is None or lwir is None:
        return visible if lwir is None else lwir
    mode = annotation["bbox_mode"]
    a = BoxMode.convert(list(visible), mode, BoxMode.XYXY_ABS)
    b = BoxMode.convert(list(lwir), mode, BoxMode.XYXY_ABS)
    if source == "union":
        box = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
    else:
        box = [(p + q) / 2.0 for p, q in zip(a, b)]
    return BoxMode.convert(box, BoxMode.XYXY_ABS, mode)


def read_frame(path: str, flags: int) -> np.ndarray:
    """``cv2.imread`` that names a missing or unreadable file instead of returning None."""
    image = cv2.imread(path, flags)
    if image is None:
        raise FileNotFoundError(f"Cannot read image {path} (missing or not an image).")
    return image


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
            "[MultispectralDatasetMapper] %s, format %s, boxes from %s; geometric: %s; visible: %s; "
            "lwir: %s",
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

    def _load(self, dataset_dict: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """The frames the format needs: ``visible`` as H x W x 3 BGR, ``lwir`` as H x W."""
        frames = {}
        if self.format.visible:
            frames["visible"] = read_frame(dataset_dict["file_name"], cv2.IMREAD_COLOR)
        if self.format.thermal_channels:
            # The LWIR JPEGs hold 3 equal channels: decoding luma only gives that grey frame, faster.
            frames["lwir"] = read_frame(dataset_dict["lwir_file_name"], cv2.IMREAD_GRAYSCALE)
        if len(frames) == 2 and frames["visible"].shape[:2] != frames["lwir"].shape[:2]:
            (vh, vw), (th, tw) = frames["visible"].shape[:2], frames["lwir"].shape[:2]
            raise ValueError(
                f"Visible frame {dataset_dict['file_name']} is {vw}x{vh} but LWIR frame "
                f"{dataset_dict['lwir_file_name']} is {tw}x{th}."
            )
        utils.check_image_size(dataset_dict, next(iter(frames.values())))
        return frames

    def _photometric(self, frames: Dict[str, np.ndarray]) -> None:
        """Per-modality photometric augmentation, in place, each modality drawing its own."""
        if "visible" in frames and self.visible_augmentations is not None:
            # Detectron2's saturation weighs the channels as RGB: augment an RGB view.
            aug_input = T.AugInput(frames["visible"][:, :, ::-1])
            self.visible_augmentations(aug_input)
            frames["visible"] = aug_input.image[:, :, ::-1]
        if "lwir" in frames and self.lwir_augmentations is not None:
            aug_input = T.AugInput(frames["lwir"])
            self.lwir_augmentations(aug_input)
            frames["lwir"] = aug_input.image

    def _to_chw(self, frames: Dict[str, np.ndarray]) -> np.ndarray:
        """One C x H x W array in the channel order of the format.

        Written channel by channel into the output: concatenating H x W x C arrays along the
        last axis and transposing would cost more than decoding the thermal frame.
        """
        height, width = next(iter(frames.values())).shape[:2]
        dtype = np.result_type(*frames.values())
        image = np.empty((self.format.channels, height, width), dtype=dtype)
        if "visible" in frames:
            visible = frames["visible"].transpose(2, 0, 1)
            image[:3] = visible[::-1] if self.format.visible == "RGB" else visible
        if "lwir" in frames:
            first = self.format.visible_channels
            image[first] = frames["lwir"]
            image[first + 1 :] = image[first]  # repeats copy the contiguous plane, not the view
        return image

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
        frames = self._load(dataset_dict)
        # Draw the geometry on the first frame, replay the same transform on the other.
        first, *others = frames
        aug_input = T.AugInput(frames[first])
        transforms = self.augmentations(aug_input)
        frames[first] = aug_input.image
        for name in others:
            frames[name] = transforms.apply_image(frames[name])
        if self.is_train:
            self._photometric(frames)
        image = self._to_chw(frames)
        image_shape = image.shape[1:]
        dataset_dict["image"] = torch.from_numpy(image)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._annotations_to_instances(dataset_dict, transforms, image_shape)
        return dataset_dict
