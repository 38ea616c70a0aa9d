"""The figures of the transfer analysis, written atomically as PNG.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas), never through
pyplot, so that tools can run on headless machines and inside other programs.
"""

from typing import Mapping, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from ..utils.file_io import atomic_write
from .activations import ActivationMaps, overlay


def save_figure(fig: Figure, path: str) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=fig.dpi)


def plot_ap_vs_iou(
    curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]], path: str, title: str = "AP vs IoU threshold"
) -> None:
    """One line per model: ``{label: (iou thresholds, AP in %)}``."""
    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    for label, (ious, ap) in curves.items():
        ax.plot(ious, ap, marker="o", label=label)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_activation_comparison(
    images: Sequence[Tuple[str, np.ndarray]],
    maps: Mapping[str, Sequence[ActivationMaps]],
    path: str,
    stage: str,
) -> None:
    """Rows: ``images`` as ``(label, RGB array)``; columns: the image, then for each
    backbone in ``maps`` its channel-summed and its top-channel map overlaid."""
    cols = 1 + 2 * len(maps)
    fig = Figure(figsize=(2.6 * cols, 2.6 * len(images)), dpi=100)
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
    fig.tight_layout()
    save_figure(fig, path)
