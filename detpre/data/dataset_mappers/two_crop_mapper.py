"""Two augmented square crops of an unlabeled image: the views of image-domain pre-training
(:class:`detpre.modeling.meta_arch.ImageDomainPretrainer`).

MoCo v2's "aug+" (its ``main_moco.py``), drawn independently for each view:
RandomResizedCrop to ``CROP_SIZE`` (area 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) with
probability 0.8, RandomGrayscale 0.2, Gaussian blur (sigma 0.1-2, PIL's filter, as MoCo's)
with probability 0.5 and a horizontal flip; ``INPUT.IMAGE_DOMAIN`` holds every value.
Annotations are ignored: any registered dataset is a source of unlabeled images.

All on PIL images, whose kernels run in C: the crop is torchvision's own
``resized_crop``/``hflip`` on PIL, the same computation as MoCo's transforms, and the blur is
:class:`~.two_view_mapper.PILGaussianBlur` (MoCo's blur).

Multispectral pairs (``INPUT.FORMAT`` such as ``BGRT``; :mod:`detpre.data.multispectral`):

* by default both frames are in both views: a view's crop and flip are drawn once and
  applied to both frames (they stay aligned), its photometric ops are drawn per frame, and
  the thermal frame gets brightness / contrast jitter and blur only (saturation, hue and
  grayscale mean nothing on one channel);
* with ``MODEL.IMAGE_DOMAIN.CROSS_MODAL`` view 1 is the visible frame and view 2 the thermal
  frame of the pair (sharing one crop and flip unless ``CROSS_MODAL_SHARED_CROP`` is off);
  each view's image keeps every channel of the format, the other modality's at 0, and says
  which modality it shows in ``"modality"``; the model blanks those channels after
  normalisation.
"""

import logging
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from PIL import Image
from torchvision import transforms as tvt
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from ..multispectral import LWIR, VISIBLE, MultispectralFormat, read_frames, stack_channels
from .build import MAPPER_REGISTRY
from .two_view_mapper import PILGaussianBlur

logger = logging.getLogger(__name__)

__all__ = ["TwoCropDatasetMapper", "moco_v2_photometric"]


def moco_v2_photometric(
    color: bool,
    jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_sigma: Tuple[float, float] = (0.1, 2.0),
    blur_prob: float = 0.5,
) -> Callable[[Image.Image], Image.Image]:
    """MoCo v2's photometric augmentation of a PIL image: RGB when ``color``, else one channel
    ("L"), which gets the brightness and contrast jitter and the blur only."""
    brightness, contrast, saturation, hue = jitter
    ops: List[Callable] = []
    if color:
        ops += [
            tvt.RandomApply([tvt.ColorJitter(brightness, contrast, saturation, hue)], p=jitter_prob),
            tvt.RandomGrayscale(p=grayscale_prob),
        ]
    else:
        ops.append(tvt.RandomApply([tvt.ColorJitter(brightness, contrast)], p=jitter_prob))
    ops.append(tvt.RandomApply([PILGaussianBlur(sigma=tuple(blur_sigma))], p=blur_prob))
    return tvt.Compose(ops)


@MAPPER_REGISTRY.register()
class TwoCropDatasetMapper:
    """Map any dataset dict to ``{"views": [view, view], ...}`` for image-domain pre-training.

    Each view is ``{"image": C x S x S uint8 tensor in INPUT.FORMAT's channel order,
    "modality": None (every channel) | "visible" | "lwir"}``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        image_format: str = "BGR",
        crop_size: int = 224,
        crop_scale: Tuple[float, float] = (0.2, 1.0),
        crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_sigma: Tuple[float, float] = (0.1, 2.0),
        blur_prob: float = 0.5,
        flip_prob: float = 0.5,
        cross_modal: bool = False,
        shared_crop: bool = True,
    ):
        """
        Args:
            image_format: ``BGR``/``RGB`` or a multispectral format (``BGRT``, ``TTT``, ...).
            cross_modal: view 1 the visible frame, view 2 the thermal frame of each pair.
            shared_crop: with ``cross_modal``, both views share one crop and flip.
            Others: see ``INPUT.IMAGE_DOMAIN`` in :func:`detpre.config.add_detpre_config`.
        """
        if not is_train:
            raise ValueError(
                "TwoCropDatasetMapper makes pre-training batches only; leave DATASETS.TEST empty in "
                "image-domain pre-training configs."
            )
        if crop_size < 1 or not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(
                f"INPUT.IMAGE_DOMAIN.CROP_SIZE ({crop_size}) must be positive and CROP_SCALE ({tuple(crop_scale)}) "
                "a range within (0, 1]."
            )
        if len(color_jitter) != 4:
            raise ValueError(
                f"INPUT.IMAGE_DOMAIN.COLOR_JITTER needs brightness, contrast, saturation and hue, got {color_jitter}."
            )
        self.format = MultispectralFormat.parse(image_format)
        if cross_modal:
            self.format.check_cross_modal(image_format)
        self.crop_size = crop_size
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.flip_prob = flip_prob
        self.cross_modal = cross_modal
        self.shared_crop = shared_crop
        photometric = {
            "jitter": color_jitter,
            "jitter_prob": color_jitter_prob,
            "grayscale_prob": grayscale_prob,
            "blur_sigma": blur_sigma,
            "blur_prob": blur_prob,
        }
        self.photometric = {
            VISIBLE: moco_v2_photometric(color=True, **photometric),
            LWIR: moco_v2_photometric(color=False, **photometric),
        }
        logger.info(
            "[TwoCropDatasetMapper] format %s, %s; crops of %d px, area %s, flip %s; visible %s; thermal %s",
            image_format,
            "cross-modal views" if cross_modal else "two views of every channel",
            crop_size,
            self.crop_scale,
            flip_prob,
            self.photometric[VISIBLE],
            self.photometric[LWIR],
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        fmt = MultispectralFormat.parse(cfg.INPUT.FORMAT)
        fmt.check_pixel_stats(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT)
        aug = cfg.INPUT.IMAGE_DOMAIN
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "crop_size": aug.CROP_SIZE,
            "crop_scale": tuple(aug.CROP_SCALE),
            "crop_ratio": tuple(aug.CROP_RATIO),
            "color_jitter": tuple(aug.COLOR_JITTER),
            "color_jitter_prob": aug.COLOR_JITTER_PROB,
            "grayscale_prob": aug.GRAYSCALE_PROB,
            "blur_sigma": tuple(aug.BLUR_SIGMA),
            "blur_prob": aug.BLUR_PROB,
            "flip_prob": aug.FLIP_PROB,
            "cross_modal": cfg.MODEL.IMAGE_DOMAIN.CROSS_MODAL,
            "shared_crop": aug.CROSS_MODAL_SHARED_CROP,
        }

    def _geometry(self, image: Image.Image) -> Tuple[Tuple[int, int, int, int], bool]:
        """A crop (top, left, height, width) as torchvision's RandomResizedCrop draws it, and a flip."""
        crop = tvt.RandomResizedCrop.get_params(image, list(self.crop_scale), list(self.crop_ratio))
        return crop, random.random() < self.flip_prob

    def _crop(self, image: Image.Image, geometry) -> Image.Image:
        (top, left, height, width), flip = geometry
        size = [self.crop_size, self.crop_size]
        out = tvf.resized_crop(image, top, left, height, width, size, InterpolationMode.BILINEAR, antialias=True)
        return tvf.hflip(out) if flip else out

    def _view(self, frames: Dict[str, Image.Image], geometry, shown: Optional[str]) -> Dict[str, Any]:
        """One view: every frame of the format cropped alike and augmented on its own; with
        ``shown``, the other modality's channels are left at 0."""
        out: Dict[str, np.ndarray] = {}
        for modality, frame in frames.items():
            if shown is not None and modality != shown:
                shape = (self.crop_size, self.crop_size, 3) if modality == VISIBLE else (self.crop_size,) * 2
                out[modality] = np.zeros(shape, dtype=np.uint8)
                continue
            augmented = np.asarray(self.photometric[modality](self._crop(frame, geometry)))
            out[modality] = augmented[:, :, ::-1] if modality == VISIBLE else augmented  # RGB -> BGR
        return {"image": torch.from_numpy(stack_channels(out, self.format)), "modality": shown}

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        frames = read_frames(dataset_dict, self.format.modalities)
        height, width = next(iter(frames.values())).shape[:2]
        pil = {
            m: Image.fromarray(np.ascontiguousarray(f[:, :, ::-1]), "RGB") if m == VISIBLE else Image.fromarray(f, "L")
            for m, f in frames.items()
        }
        first = next(iter(pil.values()))
        geometries = [self._geometry(first)]
        geometries.append(geometries[0] if self.cross_modal and self.shared_crop else self._geometry(first))
        shown = (VISIBLE, LWIR) if self.cross_modal else (None, None)
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
            "height": height,
            "width": width,
            "views": [self._view(pil, g, s) for g, s in zip(geometries, shown)],
        }
