"""Aligned visible + thermal (LWIR) frame pairs, such as KAIST's: the one owner of how a pair
is named in a dataset dict, read, augmented with one geometry, and stacked into channels.

Both mappers (:class:`~detpre.data.dataset_mappers.MultispectralDatasetMapper`,
:class:`~detpre.data.dataset_mappers.TwoViewDatasetMapper`), the proposal tool, the
visualiser and the fusion backbone go through here, so that a format, a key or a read
behaves the same everywhere.

* **Dataset-dict keys**: the visible frame is Detectron2's ``file_name``, the thermal frame
  ``lwir_file_name`` (:data:`FILE_KEYS`); paired annotations carry one box per modality
  under ``bbox_visible`` / ``bbox_lwir`` (:func:`box_key`, None where the object is not
  annotated in that modality).
* **``INPUT.FORMAT``** names the channels, visible first (:class:`MultispectralFormat`).
* **Geometry** is drawn once, on the first frame, and the same transform is replayed on the
  other (:func:`apply_geometry`): boxes drawn on one frame must keep matching the other.
"""

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from kaisteval.frames import MODALITIES

from .image_io import read_image

__all__ = [
    "BOX_SOURCES",
    "FILE_KEYS",
    "LWIR",
    "MODALITIES",
    "VISIBLE",
    "MultispectralFormat",
    "apply_geometry",
    "box_key",
    "paired_record",
    "read_frames",
    "select_box",
    "stack_channels",
]

#: The two frames of a pair, named as KAIST's image folders name them.
VISIBLE, LWIR = MODALITIES
#: The dataset-dict key of each modality's image file.
FILE_KEYS = {VISIBLE: "file_name", LWIR: "lwir_file_name"}
#: Which boxes of paired annotations supervise training (``INPUT.KAIST.BOX_SOURCE``).
BOX_SOURCES = ("visible", "lwir", "union", "average")
_FORMAT_RE = re.compile(r"^(?P<visible>BGR|RGB)?(?P<thermal>TTT|T)?$")


def box_key(modality: str) -> str:
    """The annotation key of a paired annotation's box in ``modality``."""
    return f"bbox_{modality}"


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

    @property
    def modalities(self) -> Tuple[str, ...]:
        """The frames this format reads, visible first."""
        return tuple(m for m, n in ((VISIBLE, self.visible_channels), (LWIR, self.thermal_channels)) if n)

    def check_cross_modal(self, fmt: str) -> None:
        """Cross-modal pre-training (``MODEL.IMAGE_DOMAIN.CROSS_MODAL``) needs both frames of a pair."""
        if not self.visible or not self.thermal_channels:
            raise ValueError(
                f"MODEL.IMAGE_DOMAIN.CROSS_MODAL pairs a visible and a thermal frame, but INPUT.FORMAT "
                f"{fmt!r} has {'no thermal' if self.visible else 'no visible'} channels."
            )

    def check_pixel_stats(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], fmt: str) -> None:
        """MODEL.PIXEL_MEAN/STD must give one value per channel of the format."""
        for key, values in (("MODEL.PIXEL_MEAN", pixel_mean), ("MODEL.PIXEL_STD", pixel_std)):
            if len(values) != self.channels:
                raise ValueError(
                    f"INPUT.FORMAT {fmt!r} has {self.channels} channels but {key} has "
                    f"{len(values)} values ({list(values)}): give one per channel, visible first."
                )


def paired_record(path: str) -> Dict[str, str]:
    """The dataset-dict file keys of the pair one of whose frames is ``path``, by KAIST's layout
    (``.../VYYY/visible/IZZZZZ.jpg`` beside ``.../VYYY/lwir/IZZZZZ.jpg``): for tools that take
    image files rather than a registered dataset."""
    folder, name = os.path.split(path)
    parent, modality = os.path.split(folder)
    if modality not in MODALITIES:
        raise ValueError(
            f"{path} is not a frame of a visible + LWIR pair: a multispectral INPUT.FORMAT reads pairs laid out as "
            ".../visible/<frame> beside .../lwir/<frame>."
        )
    return {FILE_KEYS[m]: os.path.join(parent, m, name) for m in MODALITIES}


def frame_file(record: Dict[str, Any], modality: str) -> str:
    """The image file of ``modality`` in a dataset dict (KeyError naming what is missing)."""
    key = FILE_KEYS[modality]
    if key not in record:
        raise KeyError(
            f"Image {record.get('file_name', record.get('image_id'))!r} has no {key!r}: the {modality} frame "
            "is needed (a multispectral dataset such as KAIST's has both frames in its dicts)."
        )
    return record[key]


def read_frames(record: Dict[str, Any], modalities: Sequence[str]) -> Dict[str, np.ndarray]:
    """The frames of a dataset dict: ``visible`` as H x W x 3 BGR, ``lwir`` as H x W.

    The LWIR JPEGs hold 3 equal channels: decoding the luma alone gives that grey frame,
    faster. Frames must have the same size, and the size the dict states.
    """
    frames = {}
    for modality in modalities:
        flags = cv2.IMREAD_COLOR if modality == VISIBLE else cv2.IMREAD_GRAYSCALE
        frames[modality] = read_image(frame_file(record, modality), flags)
    if len(frames) == 2 and frames[VISIBLE].shape[:2] != frames[LWIR].shape[:2]:
        (vh, vw), (th, tw) = frames[VISIBLE].shape[:2], frames[LWIR].shape[:2]
        raise ValueError(
            f"Visible frame {frame_file(record, VISIBLE)} is {vw}x{vh} but LWIR frame "
            f"{frame_file(record, LWIR)} is {tw}x{th}."
        )
    utils.check_image_size(record, next(iter(frames.values())))
    return frames


def apply_geometry(
    frames: Dict[str, np.ndarray], augmentations: T.AugmentationList
) -> Tuple[Dict[str, np.ndarray], T.Transform]:
    """Draw ``augmentations`` on the first frame and replay the same transform on the others."""
    first, *others = frames
    aug_input = T.AugInput(frames[first])
    transforms = augmentations(aug_input)
    out = {first: aug_input.image}
    out.update({name: transforms.apply_image(frames[name]) for name in others})
    return out, transforms


def stack_channels(frames: Dict[str, np.ndarray], fmt: MultispectralFormat) -> np.ndarray:
    """One C x H x W array in the channel order of ``fmt``.

    Written channel by channel into the output: concatenating H x W x C arrays along the
    last axis and transposing would cost more than decoding the thermal frame.
    """
    height, width = next(iter(frames.values())).shape[:2]
    dtype = np.result_type(*frames.values())
    image = np.empty((fmt.channels, height, width), dtype=dtype)
    if VISIBLE in frames:
        visible = frames[VISIBLE].transpose(2, 0, 1)
        image[:3] = visible[::-1] if fmt.visible == "RGB" else visible
    if LWIR in frames:
        first = fmt.visible_channels
        image[first] = frames[LWIR]
        image[first + 1 :] = image[first]  # repeats copy the contiguous plane, not the view
    return image


def select_box(annotation: Dict[str, Any], source: str) -> Optional[List[float]]:
    """The box of a (possibly paired) annotation that supervises training, in its bbox_mode.

    Paired annotations carry ``bbox_visible`` and ``bbox_lwir`` (None where the object is
    not annotated in that modality); other annotations have only ``bbox``, used as is.
    Returns None when the chosen modality has no box for the object.
    """
    if box_key(VISIBLE) not in annotation and box_key(LWIR) not in annotation:
        return annotation["bbox"]
    visible, lwir = annotation.get(box_key(VISIBLE)), annotation.get(box_key(LWIR))
    if source in MODALITIES:
        return visible if source == VISIBLE else lwir
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
