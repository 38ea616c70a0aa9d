"""Stage features of a detector's backbone, for probes and side-by-side comparisons.

Any Detectron2 checkpoint can be probed: a detector trained with detpre or Detectron2
(FPN or C4), a model-zoo ``.pkl``, or a torchvision/timm classifier converted with
``tools/convert_weights.py``. The backbone is built from the config alone (no heads, so a
ResNet-18 classifier needs no detector config around it) inside a holder whose one child
is named ``backbone``, so a detector checkpoint's ``backbone.*`` names load as they are and
Detectron2's name-matching heuristics place converted and Caffe2 weights.

Pooled features are cached per (checkpoint, config, stage, image list, input size) in
``.npz`` files: a probe over several regularizations, or a second comparison, does not
run the network again.
"""

import hashlib
import json
import logging
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from torch import nn

from ..data.multispectral import (
    VISIBLE,
    MultispectralFormat,
    apply_geometry,
    paired_record,
    read_frames,
    stack_channels,
)
from ..modeling.backbone.bottom_up import bottom_up
from ..modeling.build import build_backbone
from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
# Detectron2's read_image formats; any other INPUT.FORMAT is multispectral (detpre.data.multispectral).
_PIL_FORMATS = ("BGR", "RGB", "L", "YUV-BT.601")


# ------------------------------------------------------------------------ images


def is_multispectral(image_format: str) -> bool:
    return image_format not in _PIL_FORMATS


def list_images(root: str, image_format: str = "BGR") -> List[str]:
    """Every image under ``root`` (recursively), sorted, as paths relative to ``root``.

    For a multispectral ``image_format`` an image is a visible + LWIR pair, listed by its
    visible frame (``.../visible/<frame>`` with ``.../lwir/<frame>`` beside it).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image directory {root!r} does not exist")
    found = [
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    ]
    if is_multispectral(image_format):
        found = [
            p
            for p in found
            if os.path.basename(os.path.dirname(p)) == VISIBLE
            and all(os.path.isfile(f) for f in paired_record(os.path.join(root, p)).values())
        ]
    if not found:
        what = (
            "visible + LWIR pairs (.../visible/<frame>, .../lwir/<frame>)"
            if is_multispectral(image_format)
            else (f"images ({', '.join(IMAGE_EXTENSIONS)})")
        )
        raise ValueError(f"no {what} under {root!r}")
    return sorted(found)


def image_folder(root: str, image_format: str = "BGR") -> Tuple[List[str], np.ndarray, List[str]]:
    """Read an ``root/<class>/*.jpg`` dataset (Caltech-256, SUN-397, Flowers-102 layouts).

    Returns paths relative to ``root``, integer labels and the sorted class names. With a
    multispectral ``image_format``, a class folder holds pairs (``<class>/visible``, ``<class>/lwir``).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image-folder dataset {root!r} does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"{root!r} has no class sub-folders; expected root/<class>/<image>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        try:
            images = list_images(os.path.join(root, name), image_format)
        except ValueError as e:
            raise ValueError(f"class folder {os.path.join(root, name)!r} has no images") from e
        paths += [os.path.join(name, p) for p in images]
        labels += [label] * len(images)
    return paths, np.array(labels), classes


def load_image(path: str, image_format: str, size: int, crop: bool) -> np.ndarray:
    """An HWC uint8 image in ``image_format``, shorter side resized to ``size``.

    With ``crop`` the centre ``size`` x ``size`` square is kept, so that images batch. A
    multispectral format (``BGRT``, ``BGRTTT``, ``TTT``) reads the pair of which ``path`` is
    a frame, both frames resized alike, channels stacked as the multispectral mapper does.
    """
    if not is_multispectral(image_format):
        image = read_image(path, format=image_format)
        image = T.ResizeShortestEdge(size, max_size=sys.maxsize).get_transform(image).apply_image(image)
        if crop:
            h, w = image.shape[:2]
            image = T.CropTransform((w - size) // 2, (h - size) // 2, size, size).apply_image(image)
        return image
    fmt = MultispectralFormat.parse(image_format)
    frames = read_frames(paired_record(path), fmt.modalities)
    frames, _ = apply_geometry(frames, T.AugmentationList([T.ResizeShortestEdge(size, max_size=sys.maxsize)]))
    if crop:
        h, w = next(iter(frames.values())).shape[:2]
        frames, _ = apply_geometry(
            frames, T.AugmentationList([T.CropTransform((w - size) // 2, (h - size) // 2, size, size)])
        )
    return stack_channels(frames, fmt).transpose(1, 2, 0)


def to_rgb(image: np.ndarray, image_format: str) -> np.ndarray:
    """``image`` (as :func:`load_image` returns it) as RGB, for display: the visible channels
    of a multispectral image (the thermal one when it has none)."""
    if is_multispectral(image_format):
        fmt = MultispectralFormat.parse(image_format)
        image = image[:, :, :3] if fmt.visible else image[:, :, :1]
        image_format = fmt.visible or "L"
    if image_format == "BGR":
        return image[:, :, ::-1]
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return image


# ---------------------------------------------------------------------- backbone


class _Holder(nn.Module):
    """Gives the backbone the name it has inside a Detectron2 meta-architecture."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone


class _BackboneCheckpointer(DetectionCheckpointer):
    """Loads a checkpoint into a bare backbone and keeps the incompatible-keys report.

    C4 detectors (``Res5ROIHeads``) keep res5 in the box head as ``roi_heads.res5``;
    those are the weights of the backbone's res5 stage, so they are renamed to it.
    """

    incompatible = None

    def _load_model(self, checkpoint):
        model = checkpoint["model"]
        if not any(k.startswith("backbone.res5.") for k in model):
            for key in [k for k in model if k.startswith("roi_heads.res5.")]:
                model["backbone." + key[len("roi_heads.") :]] = model.pop(key)
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


class StageExtractor(nn.Module):
    """Normalizes images as the detector does and returns the requested stage outputs."""

    def __init__(self, bottom_up: nn.Module, stages: Sequence[str], pixel_mean, pixel_std):
        super().__init__()
        self.bottom_up = bottom_up
        self.stages = list(stages)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``images``: float [N, C, H, W] in the config's INPUT.FORMAT, 0-255."""
        out = self.bottom_up((images - self.pixel_mean) / self.pixel_std)
        return {s: out[s] for s in self.stages}


def load_backbone(cfg: CfgNode, weights: str, stages: Sequence[str]) -> StageExtractor:
    """The backbone of ``cfg`` with ``weights`` loaded, in eval mode, returning ``stages``.

    ``weights`` may be "" for the config's own initialization (e.g. from scratch). Raises if
    the checkpoint leaves any parameter of the used stages unfilled: a probe of a silently
    random backbone would be a wrong result, not a warning.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = sorted(set(cfg.MODEL.RESNETS.OUT_FEATURES) | set(stages))
    holder = _Holder(build_backbone(cfg))
    network = bottom_up(holder.backbone)  # FPN wraps the ResNet
    available = network.output_shape()
    unknown = [s for s in stages if s not in available]
    if unknown:
        raise ValueError(f"backbone {cfg.MODEL.BACKBONE.NAME} has no stage(s) {unknown}; it has {sorted(available)}")
    if weights:
        checkpointer = _BackboneCheckpointer(holder)
        checkpointer.load(weights)
        prefix = "backbone.bottom_up." if network is not holder.backbone else "backbone."
        missing = [k for k in checkpointer.incompatible.missing_keys if k.startswith(prefix)]
        if missing:
            raise ValueError(
                f"{weights} does not fill {len(missing)} backbone parameter(s) of this config, e.g. "
                f"{missing[:5]}; check MODEL.RESNETS (DEPTH, STRIDE_IN_1X1, NUM_GROUPS, ...) "
                "against the checkpoint"
            )
    return StageExtractor(network, stages, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD).eval()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def extract_pooled_features(
    extractor: StageExtractor,
    image_paths: Sequence[str],
    image_format: str,
    size: int,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
) -> Dict[str, np.ndarray]:
    """Globally average-pooled stage features, ``{stage: float32 [N, C]}``, in path order."""
    device = device or default_device()
    extractor = extractor.to(device)
    pooled: Dict[str, List[np.ndarray]] = {s: [] for s in extractor.stages}
    for start in range(0, len(image_paths), batch_size):
        batch = [load_image(p, image_format, size, crop=True) for p in image_paths[start : start + batch_size]]
        images = torch.as_tensor(np.stack(batch)).permute(0, 3, 1, 2).float().to(device)
        for stage, fmap in extractor(images).items():
            pooled[stage].append(fmap.mean(dim=(2, 3)).cpu().numpy())
        logger.info("extracted %d / %d images", min(start + batch_size, len(image_paths)), len(image_paths))
    return {s: np.concatenate(chunks).astype(np.float32) for s, chunks in pooled.items()}


# ------------------------------------------------------------------------- cache


def _checkpoint_identity(weights: str) -> Dict[str, object]:
    if not weights:
        return {"weights": ""}
    stat = os.stat(weights)
    return {"weights": os.path.abspath(weights), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_path(
    cache_dir: str, dataset: str, cfg: CfgNode, weights: str, stage: str, image_paths: Iterable[str], size: int
) -> str:
    """The ``.npz`` holding ``stage`` features of ``weights`` on ``image_paths`` of ``dataset``.

    The name keeps the dataset, checkpoint and stage readable; the hash covers everything
    that changes the numbers (checkpoint file identity, full config, input size, images).
    """
    key = {
        "checkpoint": _checkpoint_identity(weights),
        "config": cfg.dump(),
        "stage": stage,
        "size": size,
        "images": list(image_paths),
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    ckpt = os.path.splitext(os.path.basename(weights))[0] if weights else "init"
    name = os.path.basename(os.path.normpath(dataset))
    return os.path.join(cache_dir, f"{name}__{ckpt}__{stage}__{digest}.npz")


def pooled_features(
    cfg: CfgNode,
    weights: str,
    root: str,
    image_paths: Sequence[str],
    stages: Sequence[str],
    size: int = 224,
    cache_dir: Optional[str] = None,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
) -> Dict[str, np.ndarray]:
    """Pooled features of ``stages`` for ``root/<image_paths>``, from the cache when there.

    Only stages missing from the cache are extracted, in one pass; the backbone is not even
    built when all are cached. A randomly initialized backbone (no ``weights``) is never
    cached: its numbers change from one build to the next.
    """
    use_cache = bool(cache_dir and weights)
    files = {s: cache_path(cache_dir, root, cfg, weights, s, image_paths, size) for s in stages} if use_cache else {}
    features = {}
    for stage, path in files.items():
        if os.path.isfile(path):
            with np.load(path) as data:
                if list(data["paths"]) == list(image_paths):
                    features[stage] = data["features"]
                    logger.info("features of %s read from %s", stage, path)
    todo = [s for s in stages if s not in features]
    if todo:
        extractor = load_backbone(cfg, weights, todo)
        full_paths = [os.path.join(root, p) for p in image_paths]
        fresh = extract_pooled_features(extractor, full_paths, cfg.INPUT.FORMAT, size, batch_size, device)
        for stage in todo:
            features[stage] = fresh[stage]
            if use_cache:
                with atomic_write(files[stage], "wb") as f:
                    np.savez(f, features=fresh[stage], paths=np.array(image_paths))
    return {s: features[s] for s in stages}


@torch.no_grad()
def stage_map(extractor: StageExtractor, image: np.ndarray, stage: str, device: Optional[torch.device] = None):
    """The ``[C, h, w]`` output of ``stage`` for one HWC image (any size, not cropped)."""
    device = device or default_device()
    extractor = extractor.to(device)
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float().to(device)
    return extractor(tensor)[stage][0].cpu().numpy()
