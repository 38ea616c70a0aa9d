"""Two backbones on the same images: neighbour overlap, linear CKA and activation maps side by
side (Li et al., *An Analysis of Pre-Training on Object Detection*), for
``tools/compare_backbones.py``.

A backbone of a multispectral config (``INPUT.FORMAT`` BGRT, BGRTTT, TTT) reads visible +
LWIR pairs (:func:`detpre.analysis.features.list_images`); each map is drawn over the frame
it was computed for.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode

from .activations import ActivationMaps, activation_maps
from .cka import cka_matrix
from .features import is_multispectral, list_images, load_backbone, load_image, pooled_features, stage_map
from .neighbors import overlap_both_ways
from .plots import plot_activation_comparison

__all__ = ["Backbone", "compare_features", "draw_maps"]

Backbone = Tuple[str, CfgNode, str]  # (name, config, weights)


def compare_features(
    a: Backbone,
    b: Backbone,
    root: str,
    stages: Sequence[str],
    k: int,
    big_k: int,
    cache_dir: Optional[str],
    size: int = 224,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
) -> dict:
    """``{"knn": {stage: {"a_to_b", "b_to_a"}}, "cka": {stage_a: {stage_b: cka}}}``."""
    formats = [cfg.INPUT.FORMAT for _, cfg, _ in (a, b)]
    paths = list_images(root, next((f for f in formats if is_multispectral(f)), formats[0]))
    feats = [pooled_features(cfg, w, root, paths, stages, size, cache_dir, batch_size, device) for _, cfg, w in (a, b)]
    return {
        "images": len(paths),
        "knn": {s: overlap_both_ways(feats[0][s], feats[1][s], k, big_k) for s in stages},
        "cka": cka_matrix(feats[0], feats[1]),
    }


def draw_maps(
    backbones: Sequence[Backbone],
    images: Sequence[Tuple[str, str]],
    stage: str,
    path: str,
    size: int = 448,
    device: Optional[torch.device] = None,
) -> Dict[str, List[ActivationMaps]]:
    """Activation maps of ``stage`` for each backbone on each ``(label, image path)``, drawn to ``path``."""
    maps: Dict[str, List[ActivationMaps]] = {}
    for name, cfg, weights in backbones:
        extractor = load_backbone(cfg, weights, [stage])
        maps[name] = [
            activation_maps(stage_map(extractor, load_image(p, cfg.INPUT.FORMAT, size, crop=False), stage, device))
            for _, p in images
        ]
    shown = [(label, load_image(p, "RGB", size, crop=False)) for label, p in images]
    plot_activation_comparison(shown, maps, path, stage)
    return maps
