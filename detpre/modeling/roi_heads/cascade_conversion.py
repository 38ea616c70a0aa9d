"""A single-head (Mask/Faster R-CNN) checkpoint turned into a Cascade R-CNN checkpoint, offline
(``tools/convert_to_cascade.py``): the cascade model of a config is built on the CPU, every
stage seeded from the single head (:func:`detpre.checkpoint.cascade_seed.seed_cascade_from_single_head`)
and the result loaded into it, so every key and shape is checked before anything is written."""

from typing import Dict, NamedTuple

import torch
from detectron2.config import CfgNode

from ...checkpoint.cascade_seed import SeedReport, seed_cascade_from_single_head
from ...checkpoint.reading import CheckpointError, load_checkpoint_file, read_model_state
from ...config import ConfigError
from ..build import build_model

__all__ = ["CascadeCheckpoint", "convert_to_cascade", "read_single_head_state"]


class CascadeCheckpoint(NamedTuple):
    """The seeded state dict, how it was seeded, and what the cascade model made of it."""

    state: Dict[str, torch.Tensor]
    report: SeedReport
    missing: list  # keys of the cascade model the checkpoint leaves at init
    unexpected: list  # keys of the checkpoint the cascade model does not use


def read_single_head_state(path: str) -> Dict[str, object]:
    """The model state of a Detectron2 ``.pth`` or Detectron2-model-zoo ``.pkl`` file."""
    if path.endswith(".pkl"):
        data = load_checkpoint_file(path)
        if not (isinstance(data, dict) and "model" in data and "__author__" in data):
            raise CheckpointError(
                f"{path} is a Caffe2/Detectron checkpoint, whose names Detectron2 only maps by "
                "heuristics: load it into the single-head model with DetectionCheckpointer, "
                "save it as .pth, and convert that."
            )
    return read_model_state(path)


def convert_to_cascade(path: str, cfg: CfgNode) -> CascadeCheckpoint:
    """Seed the cascade model of ``cfg`` from the single-head checkpoint at ``path``."""
    model = build_model(cfg, world_size=1)
    if not hasattr(model, "roi_heads") or not hasattr(model.roi_heads, "num_cascade_stages"):
        raise ConfigError(
            f"the config builds no cascade ROI heads (MODEL.ROI_HEADS.NAME is {cfg.MODEL.ROI_HEADS.NAME!r})"
        )
    target = model.state_dict()
    try:
        seeded, report = seed_cascade_from_single_head(
            read_single_head_state(path),
            num_stages=model.roi_heads.num_cascade_stages,
            single_reg_weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS,
            stage_reg_weights=cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS,
            expected_shapes={k: tuple(v.shape) for k, v in target.items()},
        )
    except TypeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if not report.seeded:
        raise CheckpointError(
            f"{path} has no single-head box keys (roi_heads.box_head.<layer>.*, roi_heads.box_predictor.*): "
            "nothing to convert"
        )
    seeded = {k: torch.as_tensor(v) for k, v in seeded.items()}
    incompatible = model.load_state_dict(seeded, strict=False)
    missing = [k for k in incompatible.missing_keys if k not in ("pixel_mean", "pixel_std")]
    return CascadeCheckpoint(seeded, report, missing, list(incompatible.unexpected_keys))
