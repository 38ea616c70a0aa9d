"""Two augmented views of one image, with the same unsupervised boxes in each (AlignDet).

Box-domain pre-training (:class:`detpre.modeling.meta_arch.BoxDomainPretrainer`) contrasts
the embedding of a box in one view with the embedding of the *same* box in another view of
the image, so a view must carry every proposal with an identity that survives augmentation.
Each view draws its own geometry (Detectron2's ``INPUT.*`` augmentations: AlignDet's
``configs/_base_/datasets/coco_soft-teacher.py`` resizes each view to a short side drawn from
640-800 (long side <= 1333) and flips it with probability 0.5; optional crop) and its own
photometric augmentation, one of the recipes of :data:`PHOTOMETRIC_RECIPES`
(``INPUT.TWO_VIEW.PHOTOMETRIC``):

* ``aligndet`` (AlignDet's, the default): exactly *one* operation per view, drawn uniformly
  from Identity, AutoContrast, Equalize, Solarize, Color, Contrast, Brightness, Sharpness and
  Posterize, at a magnitude ``m`` drawn from 1-9 (:class:`AlignDetPhotometric`);
* ``byol``: the BYOL / MoCo v2 chain (colour jitter, grayscale, blur, solarize, autocontrast,
  equalize, each applied with its own probability: :func:`byol_photometric`), which detpre
  used before; AlignDet's repository has it too (``coco_byol.py``) but no config uses it;
* ``none``.

A proposal that falls (mostly) out of a view is dropped from that view only; ``gt_ids``
keeps the index of every remaining box in the image's proposal list, so views can be
matched box by box. ``INPUT.TWO_VIEW.MAX_PROPOSALS`` keeps only the first proposals of the
file (AlignDet's one-stage pre-training uses the first 50), the same ones in both views.

Proposals come from the dataset dicts (``proposal_boxes``, as ``DATASETS.PROPOSAL_FILES_TRAIN``
loads them with ``MODEL.LOAD_PROPOSALS``); annotations are ignored: pre-training is
unsupervised. Multispectral inputs (KAIST, ``INPUT.FORMAT`` such as ``BGRT``) work as in
:class:`MultispectralDatasetMapper`: the geometry is drawn once per view and replayed on the
thermal frame, photometric augmentation is drawn per modality.
"""

import logging
import random
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision import transforms as tvt

from ..multispectral import LWIR, VISIBLE, MultispectralFormat, apply_geometry, read_frames, stack_channels
from .build import MAPPER_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["PHOTOMETRIC_RECIPES", "AlignDetPhotometric", "TwoViewDatasetMapper", "byol_photometric"]


class PILGaussianBlur:
    """Gaussian blur of a PIL image with sigma drawn uniformly from ``sigma`` (MoCo v2's blur).

    PIL's own filter: torchvision's ``GaussianBlur`` turns a PIL image into a tensor and
    convolves it, several times slower on the CPU workers that feed box-domain pre-training.
    """

    def __init__(self, sigma: Tuple[float, float]):
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def byol_photometric(color: bool) -> Callable[[Image.Image], Image.Image]:
    """BYOL-style photometric augmentation of a PIL image (RGB, or "L" for one channel).

    PIL images, not tensors: torchvision then runs its PIL kernels (C), and the hue jitter
    alone, done on tensors through an HSV round trip in float, took a third of the mapper's
    time (benchmarks/loader_speed.py). Colour-only operations (saturation, hue, grayscale)
    are left out for a single-channel (thermal) frame.
    """
    jitter = tvt.ColorJitter(0.4, 0.4, 0.2, 0.1) if color else tvt.ColorJitter(0.4, 0.4)
    ops: List[Callable] = [tvt.RandomApply([jitter], p=0.8)]
    if color:
        ops.append(tvt.RandomGrayscale(p=0.2))
    ops += [
        tvt.RandomApply([PILGaussianBlur(sigma=(0.1, 2.0))], p=0.5),
        tvt.RandomSolarize(threshold=128, p=0.2),
        tvt.RandomAutocontrast(p=0.2),
        tvt.RandomEqualize(p=0.2),
    ]
    return tvt.Compose(ops)


def _enhance(enhancer) -> Callable[[Image.Image, int], Image.Image]:
    # AlignDet's factor: m * 1.8 / 10 + 0.1, i.e. 0.28 ... 1.72 (1 leaves the image as is).
    return lambda image, m: enhancer(image).enhance(float(m) * 1.8 / 10 + 0.1)


class AlignDetPhotometric:
    """AlignDet's photometric augmentation of a view: one operation of :attr:`OPS`.

    AlignDet (``AlignDet/datasets/pipelines/rand_aug.py``, ``OneOf`` of nine ``RandAug``
    ops with ``magnitude=10, random_magnitude=True``) draws the operation uniformly and an
    integer magnitude ``m = randint(1, 10)``, i.e. 1-9, which sets Solarize's threshold
    ``min(int(m * 256 / 10), 255)`` (pixels at or above it are inverted), the enhancement
    factor of Color / Contrast / Brightness / Sharpness (``m * 1.8 / 10 + 0.1``) and
    Posterize's bits (``4 - int(m * 4 / 10)``); Identity, AutoContrast and Equalize have no
    magnitude. NumPy's global RNG draws, as there (seeded per batch by detpre's loader).
    On a single-channel (thermal) frame Color is the identity, as PIL defines it.
    """

    OPS: Dict[str, Callable[[Image.Image, int], Image.Image]] = {
        "Identity": lambda image, m: image,
        "AutoContrast": lambda image, m: ImageOps.autocontrast(image),
        "Equalize": lambda image, m: ImageOps.equalize(image),
        "Solarize": lambda image, m: ImageOps.solarize(image, min(int(m * 256 / 10), 255)),
        "Color": _enhance(ImageEnhance.Color),
        "Contrast": _enhance(ImageEnhance.Contrast),
        "Brightness": _enhance(ImageEnhance.Brightness),
        "Sharpness": _enhance(ImageEnhance.Sharpness),
        "Posterize": lambda image, m: ImageOps.posterize(image, 4 - int(m * 4 / 10)),
    }

    def sample(self) -> Tuple[str, int]:
        """The operation and magnitude of one view."""
        name = list(self.OPS)[np.random.randint(len(self.OPS))]
        return name, int(np.random.randint(1, 10))

    def apply(self, image: Image.Image, name: str, magnitude: int) -> Image.Image:
        return self.OPS[name](image, magnitude)

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.apply(image, *self.sample())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(one of {list(self.OPS)}, magnitude 1-9)"


#: ``INPUT.TWO_VIEW.PHOTOMETRIC`` -> (visible frame's augmentation, thermal frame's), or None.
PHOTOMETRIC_RECIPES: Dict[str, Callable[[], Optional[Tuple[Callable, Callable]]]] = {
    "aligndet": lambda: (AlignDetPhotometric(), AlignDetPhotometric()),
    "byol": lambda: (byol_photometric(color=True), byol_photometric(color=False)),
    "none": lambda: None,
}


@MAPPER_REGISTRY.register()
class TwoViewDatasetMapper:
    """Map a dataset dict with ``proposal_boxes`` to ``{"views": [view, view], ...}``.

    Each view is what Detectron2 models take: ``{"image": C x H x W uint8 tensor,
    "instances": Instances(gt_boxes, gt_classes=0, gt_ids)}``, ``gt_ids`` being the index of
    each box in the image's proposal list.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        photometric: str = "aligndet",
        min_visible_fraction: float = 0.5,
        max_proposals: int = 0,
    ):
        """
        Args:
            augmentations: geometric augmentations, drawn independently for each view.
            image_format: ``BGR``/``RGB`` or a multispectral format (``BGRT``, ``TTT``, ...).
            photometric: a recipe of :data:`PHOTOMETRIC_RECIPES`, drawn per view and frame.
            min_visible_fraction: a proposal is dropped from a view when less than this
                fraction of its area is left inside the (cropped) view.
            max_proposals: use only the first this many proposals of an image (0: all).
        """
        if not is_train:
            raise ValueError(
                "TwoViewDatasetMapper makes pre-training batches only; evaluate the fine-tuned "
                "detector instead (leave DATASETS.TEST empty in box-domain pre-training configs)."
            )
        if not 0.0 < min_visible_fraction <= 1.0:
            raise ValueError(f"INPUT.TWO_VIEW.MIN_VISIBLE_FRACTION must be in (0, 1], got {min_visible_fraction}.")
        if photometric not in PHOTOMETRIC_RECIPES:
            raise ValueError(f"INPUT.TWO_VIEW.PHOTOMETRIC {photometric!r} is not one of {sorted(PHOTOMETRIC_RECIPES)}.")
        if max_proposals < 0:
            raise ValueError(f"INPUT.TWO_VIEW.MAX_PROPOSALS must be >= 0 (0: all), got {max_proposals}.")
        self.augmentations = T.AugmentationList(augmentations)
        self.format = MultispectralFormat.parse(image_format)
        self.min_visible_fraction = min_visible_fraction
        self.max_proposals = max_proposals
        recipe = PHOTOMETRIC_RECIPES[photometric]()
        self.visible_photometric, self.thermal_photometric = recipe if recipe is not None else (None, None)
        logger.info(
            "[TwoViewDatasetMapper] format %s; geometric per view: %s; photometric per view: %s; proposals: %s",
            image_format,
            augmentations,
            photometric,
            max_proposals or "all",
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        fmt = MultispectralFormat.parse(cfg.INPUT.FORMAT)
        fmt.check_pixel_stats(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT)
        augmentations = utils.build_augmentation(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED:
            augmentations.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "photometric": cfg.INPUT.TWO_VIEW.PHOTOMETRIC,
            "min_visible_fraction": cfg.INPUT.TWO_VIEW.MIN_VISIBLE_FRACTION,
            "max_proposals": cfg.INPUT.TWO_VIEW.MAX_PROPOSALS,
        }

    def _photometric(self, frames: Dict[str, np.ndarray]) -> None:
        if VISIBLE in frames and self.visible_photometric is not None:
            rgb = Image.fromarray(np.ascontiguousarray(frames[VISIBLE][:, :, ::-1]), "RGB")
            frames[VISIBLE] = np.asarray(self.visible_photometric(rgb))[:, :, ::-1]
        if LWIR in frames and self.thermal_photometric is not None:
            thermal = Image.fromarray(np.ascontiguousarray(frames[LWIR]), "L")
            frames[LWIR] = np.asarray(self.thermal_photometric(thermal))

    def _view(self, frames: Dict[str, np.ndarray], boxes: np.ndarray) -> Dict[str, Any]:
        view, transforms = apply_geometry(frames, self.augmentations)
        self._photometric(view)
        image = torch.from_numpy(stack_channels(view, self.format))
        height, width = image.shape[1:]

        moved = transforms.apply_box(boxes) if len(boxes) else boxes.reshape(0, 4)
        clipped = moved.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)

        def area(b: np.ndarray) -> np.ndarray:
            return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)

        full = area(moved)
        keep = (full > 0) & (area(clipped) >= self.min_visible_fraction * full)
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.as_tensor(clipped[keep], dtype=torch.float32))
        instances.gt_classes = torch.zeros(int(keep.sum()), dtype=torch.int64)
        instances.gt_ids = torch.as_tensor(np.flatnonzero(keep), dtype=torch.int64)
        return {"image": image, "instances": instances}

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        if "proposal_boxes" not in dataset_dict:
            raise KeyError(
                f"Image {dataset_dict.get('file_name')} has no 'proposal_boxes': box-domain pre-training "
                "needs MODEL.LOAD_PROPOSALS: True and DATASETS.PROPOSAL_FILES_TRAIN (written by "
                "tools/precompute_proposals.py)."
            )
        frames = read_frames(dataset_dict, self.format.modalities)
        boxes = BoxMode.convert(
            np.asarray(dataset_dict["proposal_boxes"], dtype=np.float32).reshape(-1, 4),
            dataset_dict.get("proposal_bbox_mode", BoxMode.XYXY_ABS),
            BoxMode.XYXY_ABS,
        )
        if self.max_proposals:
            boxes = boxes[: self.max_proposals]
        height, width = next(iter(frames.values())).shape[:2]
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
            "height": height,
            "width": width,
            "views": [self._view(frames, boxes) for _ in range(2)],
        }
