"""The figures of the transfer analysis: AP across IoU thresholds, and activation maps.

Both follow the project's figure policy (:mod:`kaisteval.figures`: a bare Figure on an Agg
canvas, colour per model, line style per protocol, the legend off the data, an atomic save).
Each ``draw_*`` returns the Figure (what tests look at), each ``plot_*`` writes it.
"""

from typing import Mapping, Sequence, Tuple

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

from kaisteval.figures import new_figure, save_figure

from ..evaluation.iou_sweep import APSweep
from ..utils.curves import Curve, draw_curves
from .activations import HEAT_COLORS, ActivationMaps, overlay

__all__ = ["PROTOCOLS", "draw_activation_comparison", "draw_ap_vs_iou", "plot_activation_comparison", "plot_ap_vs_iou"]

#: The sweeps of :func:`detpre.analysis.ap_vs_iou.evaluate_results`, in legend order, with
#: the names a reader knows them by.
PROTOCOLS = {"coco": "COCO", "voc_area": "VOC area", "voc07": "VOC 11-point"}


def draw_ap_vs_iou(sweeps: Mapping[str, Mapping[str, APSweep]], title: str = "AP vs IoU threshold") -> Figure:
    """``{model: {protocol: sweep}}`` on one figure: a colour per model, a line style (and
    marker) per protocol (:data:`PROTOCOLS`), the legend right of the axes."""
    curves = []
    for model, by_protocol in sweeps.items():
        for key in sorted(by_protocol, key=lambda k: list(PROTOCOLS).index(k) if k in PROTOCOLS else len(PROTOCOLS)):
            sweep = by_protocol[key]
            name = PROTOCOLS.get(key, key)
            curves.append(Curve(f"{model} ({name})", list(zip(sweep.thresholds, sweep.ap)), model, name))
    thresholds = next(iter(next(iter(sweeps.values())).values())).thresholds
    return draw_curves(
        curves,
        xlabel="IoU threshold",
        ylabel="AP (%)",
        metric="AP",
        title=title,
        group_title="model",
        subgroup_title="protocol",
        x_ticks=[round(float(t), 2) for t in thresholds],
        label_ends=False,
    )


def plot_ap_vs_iou(sweeps: Mapping[str, Mapping[str, APSweep]], path: str, title: str = "AP vs IoU threshold") -> str:
    """:func:`draw_ap_vs_iou`, written to ``path``."""
    return save_figure(draw_ap_vs_iou(sweeps, title), path)


def draw_activation_comparison(
    images: Sequence[Tuple[str, np.ndarray]],
    maps: Mapping[str, Sequence[ActivationMaps]],
    stage: str,
) -> Figure:
    """Rows: ``images`` as ``(label, RGB array)``; columns: the image, then for each
    backbone in ``maps`` its channel-summed and its top-channel map overlaid; a colour bar
    on the right reads the overlays (each map min-max scaled on its own image)."""
    cols = 1 + 2 * len(maps)
    fig = new_figure(2.6 * cols + 0.8, 2.6 * len(images))
    fig.set_layout_engine("constrained")
    axes = np.asarray(fig.subplots(len(images), cols, squeeze=False))
    for row, (label, rgb) in enumerate(images):
        axes[row, 0].imshow(rgb)
        axes[row, 0].set_title(label, fontsize=9)
        for b, (backbone, per_image) in enumerate(maps.items()):
            m = per_image[row]
            axes[row, 1 + 2 * b].imshow(overlay(rgb, m.summed))
            axes[row, 1 + 2 * b].set_title(f"{backbone}: {stage} sum", fontsize=9)
            axes[row, 2 + 2 * b].imshow(overlay(rgb, m.top))
            axes[row, 2 + 2 * b].set_title(f"{backbone}: {stage} ch {m.top_channel}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    heat = ScalarMappable(Normalize(0.0, 1.0), ListedColormap(HEAT_COLORS / 255.0, name="detpre-heat"))
    bar = fig.colorbar(heat, ax=list(axes.flat), shrink=0.85, ticks=[0.0, 0.5, 1.0])
    bar.set_label("activation (min-max scaled per map)", fontsize=9)
    return fig


def plot_activation_comparison(
    images: Sequence[Tuple[str, np.ndarray]],
    maps: Mapping[str, Sequence[ActivationMaps]],
    path: str,
    stage: str,
) -> str:
    """:func:`draw_activation_comparison`, written to ``path`` (laid out by matplotlib's
    constrained layout, which makes room for the colour bar)."""
    return save_figure(draw_activation_comparison(images, maps, stage), path, layout=False)
