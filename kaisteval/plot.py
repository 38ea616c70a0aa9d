"""Miss rate against false positives per image, the figure KAIST and Caltech papers compare.

Drawn by the project's figure policy (:mod:`kaisteval.figures`: a bare Figure, a colour per
result file, an atomic save). matplotlib is imported here only, so that evaluating without
``--plot`` stays fast.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from matplotlib.ticker import NullLocator

from .evaluate import SettingResult
from .figures import StylePolicy, new_figure, save_figure

__all__ = ["MISS_RATE_TICKS", "draw_miss_rate_curves", "plot_miss_rate_curves", "set_miss_rate_axis"]

# Axis limits and miss-rate ticks of the Caltech toolbox's dbEval plots (lims=[3.1e-3 1e1 .05 1]),
# but with the top raised a little above 100%: a detector that misses everything (or a curve's
# start at 100%) would otherwise be drawn on the frame itself, where nobody can see it.
_FPPI_LIMITS = (3.1e-3, 1e1)
_MISS_LIMITS = (0.05, 1.12)
#: The miss-rate ticks of the Caltech toolbox's plots, as fractions.
MISS_RATE_TICKS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.64, 0.8, 1.0)


def set_miss_rate_axis(ax, limits: Tuple[float, float] = _MISS_LIMITS, scale: float = 1.0) -> None:
    """A log miss-rate y axis with the toolbox's ticks, labelled in percent (``5%`` ...
    ``100%``); ``scale`` is 1 for values given as fractions, 100 for values in percent."""
    ticks = [scale * t for t in MISS_RATE_TICKS if limits[0] <= scale * t <= limits[1]]
    ax.set_yscale("log")
    ax.set_ylim(*limits)
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{100 * t / scale:g}%" for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())


def draw_miss_rate_curves(ax, curves: Sequence[Tuple[str, SettingResult]], title: str = "") -> None:
    """Draw one log-log curve per (name, result) on the matplotlib axes ``ax``, best MR first.

    Legend and axis are both in percent (``"30.05% name"``, ticks ``5%`` ... ``100%``), so a
    legend value can be read off the axis. The legend sits in the lower left, as in the
    toolbox's plots: curves start at the top left and fall to the right, so that corner is
    where no curve runs.
    """
    ranked = sorted(curves, key=lambda c: (np.nan_to_num(c[1].mr, nan=np.inf), c[0]))
    styles = StylePolicy(name for name, _ in ranked)
    for name, res in ranked:
        # Start at (0 FPPI, miss 1) so that a curve is drawn even with one point, and hold the
        # last miss rate to the right edge, as MR's sampling does (the last point at FPPI <= ref):
        # a detector without false positives would otherwise be a vertical line off the axes.
        fppi = np.concatenate([[_FPPI_LIMITS[0] / 10], np.maximum(res.fppi, _FPPI_LIMITS[0] / 10), [_FPPI_LIMITS[1]]])
        miss = np.concatenate([[1.0], res.miss, res.miss[-1:] if len(res.miss) else [1.0]])
        label = f"{100 * res.mr:.2f}% {name}" if np.isfinite(res.mr) else f"n/a {name}"
        ax.plot(
            fppi,
            np.maximum(miss, _MISS_LIMITS[0] / 2),
            drawstyle="steps-post",
            linewidth=2,
            color=styles.color(name),
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xlim(*_FPPI_LIMITS)
    set_miss_rate_axis(ax)
    ax.minorticks_off()
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("miss rate")
    ax.grid(True, which="major", linestyle=":")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left", fontsize=9, title="MR$^{-2}$")


def plot_miss_rate_curves(curves: Sequence[Tuple[str, SettingResult]], path: str, title: str = "") -> str:
    """Draw the curves (:func:`draw_miss_rate_curves`) into the PNG ``path``."""
    fig = new_figure(6, 5, dpi=120)
    draw_miss_rate_curves(fig.subplots(), curves, title)
    return save_figure(fig, path)
