"""Load 3-channel (RGB) weights into a network whose first convolution takes other channels.

An early-fusion KAIST detector reads visible + thermal as 4 (``BGRT``) or 6 (``BGRTTT``)
channels, and a halfway-fusion thermal stream may read 1. The ImageNet and COCO weights it
should start from have a 3-channel stem. Detectron2's loaders drop a tensor whose shape
differs from the model's, which would leave the one layer that sees the pixels at random
init; here the stem's first convolution is *inflated* instead, before the shape check:

* more than 3 input channels: the 3 RGB filters are kept for the visible channels (same
  order as the weights were trained on: ``INPUT.FORMAT`` BGR for MSRA/Detectron2 weights)
  and each extra (thermal) channel gets the mean of the 3 RGB filters, so it responds on
  the scale of one colour channel;
* fewer (a thermal stream): each channel gets the *sum* of the RGB filters, which is
  exactly what the RGB network computes on a grey frame repeated on 3 channels.

Only Detectron2's stem convolutions (``...stem.conv1.weight``) are inflated, and only from
3 input channels; every inflation is logged. :class:`detpre.checkpoint.DetpreCheckpointer`
applies it to every checkpoint it loads.
"""

import logging
from typing import Any, Dict, Mapping

import torch

logger = logging.getLogger(__name__)

__all__ = ["STEM_CONV_SUFFIX", "inflate_input_conv", "inflate_state_dict", "stem_shapes_at_three_channels"]

STEM_CONV_SUFFIX = "stem.conv1.weight"


def inflate_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight ``(O, 3, kh, kw)`` made to take ``in_channels`` inputs (see module doc)."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"Can only inflate a conv weight with 3 input channels, got shape {tuple(weight.shape)}.")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
    if in_channels == 3:
        return weight
    if in_channels < 3:
        return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    mean = weight.mean(dim=1, keepdim=True)
    return torch.cat([weight, mean.repeat(1, in_channels - 3, 1, 1)], dim=1)


def _is_inflatable(model_value: torch.Tensor, ckpt_value: Any) -> bool:
    return (
        isinstance(ckpt_value, torch.Tensor)
        and ckpt_value.dim() == 4
        and ckpt_value.shape[1] == 3
        and model_value.dim() == 4
        and model_value.shape[1] != 3
        and model_value.shape[0] == ckpt_value.shape[0]
        and model_value.shape[2:] == ckpt_value.shape[2:]
    )


def inflate_state_dict(state_dict: Dict[str, Any], model_state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Inflate, in place, the stem convs of ``state_dict`` to the model's input channels.

    Keys are the model's (a ``module.`` prefix in the checkpoint is tolerated). Returns
    ``state_dict``.
    """
    for key, model_value in model_state_dict.items():
        if not key.endswith(STEM_CONV_SUFFIX):
            continue
        ckpt_key = key if key in state_dict else f"module.{key}"
        if ckpt_key in state_dict and _is_inflatable(model_value, state_dict[ckpt_key]):
            channels = model_value.shape[1]
            state_dict[ckpt_key] = inflate_input_conv(state_dict[ckpt_key], channels).to(model_value.dtype)
            rule = "mean of the RGB filters for each extra channel" if channels > 3 else "sum of the RGB filters"
            logger.info("Inflated %s from 3 to %d input channels (%s) instead of dropping it.", key, channels, rule)
    return state_dict


def stem_shapes_at_three_channels(model_state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Meta tensors of the model's stems as they would be at 3 input channels: Detectron2's
    name matching drops any shape mismatch while renaming, so it must see the RGB stem."""
    return {
        k: torch.empty((v.shape[0], 3, *v.shape[2:]), device="meta")
        for k, v in model_state.items()
        if k.endswith(STEM_CONV_SUFFIX) and v.dim() == 4 and v.shape[1] != 3
    }
