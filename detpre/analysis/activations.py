"""Where a stage fires: channel-summed and strongest-channel activation maps.

Li et al. (2019) observe that a detection network's activations cover whole objects while
a classification network's concentrate on discriminative parts. These maps make that
visible for any two backbones on the same image (or a KAIST visible/thermal pair).
"""

from dataclasses import dataclass

import cv2
import numpy as np


def normalize01(x: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


@dataclass
class ActivationMaps:
    """Maps of one stage on one image, each [h, w] in [0, 1] at the stage's resolution."""

    summed: np.ndarray
    top: np.ndarray
    top_channel: int


def activation_maps(fmap: np.ndarray) -> ActivationMaps:
    """Maps of a ``[C, h, w]`` stage output: the sum over channels, and the channel with
    the largest mean activation on this image (the unit this image excites most)."""
    fmap = np.asarray(fmap, dtype=np.float32)
    if fmap.ndim != 3:
        raise ValueError(f"a stage output must be [channels, height, width], got shape {fmap.shape}")
    top = int(fmap.mean(axis=(1, 2)).argmax())
    return ActivationMaps(summed=normalize01(fmap.sum(axis=0)), top=normalize01(fmap[top]), top_channel=top)


#: The RGB colour of each heat level 0..255 in :func:`overlay` (OpenCV's jet), [256, 3] uint8: the
#: colour bar of a figure of maps is drawn from it, so that it reads the overlays exactly.
HEAT_COLORS = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()


def overlay(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``heat`` ([h, w] in [0, 1]) upsampled to the image, as a jet colour map blended over it."""
    h, w = image_rgb.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colored = HEAT_COLORS[np.uint8(np.clip(heat, 0, 1) * 255)]
    blended = (1 - alpha) * image_rgb.astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)
