"""Miss rate against false positives per image, the figure KAIST and Caltech papers compare.

matplotlib is imported here only, so that evaluating without ``--plot`` stays fast.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .evaluate import SettingResult

__all__ = ["draw_miss_rate_curves", "plot_miss_rate_curves"]

# Axis limits and miss-rate ticks of the Caltech toolbox's dbEval plots (lims=[3.1e-3 1e1 .05 1]),
# but with the top raised a little above 100%: a detector that misses everything (or a curve's
# start at 100%) would otherwise be drawn on the frame itself, where nobody can see it.
_FPPI_LIMITS = (3.1e-3, 1e1)
_MISS_LIMITS = (0.05, 1.12)
_MISS_TICKS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.64, 0.8, 1.0)


def draw_miss_rate_curves(ax, curves: Sequence[Tuple[str, SettingResult]], title: str = "") -> None:
    """Draw one log-log curve per (name, result) on the matplotlib axes ``ax``, best MR first.

    Legend and axis are both in percent (``"30.05% name"``, ticks ``5%`` ... ``100%``), so a
    legend value can be read off the axis.
    """
    for name, res in sorted(curves, key=lambda c: (np.nan_to_num(c[1].mr, nan=np.inf), c[0])):
        # Start at (0 FPPI, miss 1) so that a curve is drawn even with one point, and hold the
        # last miss rate to the right edge, as MR's sampling does (the last point at FPPI <= ref):
        # a detector without false positives would otherwise be a vertical line off the axes.
        fppi = np.concatenate([[_FPPI_LIMITS[0] / 10], np.maximum(res.fppi, _FPPI_LIMITS[0] / 10), [_FPPI_LIMITS[1]]])
        miss = np.concatenate([[1.0], res.miss, res.miss[-1:] if len(res.miss) else [1.0]])
        label = f"{100 * res.mr:.2f}% {name}" if np.isfinite(res.mr) else f"n/a {name}"
        ax.plot(fppi, np.maximum(miss, _MISS_LIMITS[0] / 2), drawstyle="steps-post", linewidth=2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*_FPPI_LIMITS)
    ax.set_ylim(*_MISS_LIMITS)
    ax.set_yticks(_MISS_TICKS)
    ax.set_yticklabels([f"{100 * t:g}%" for t in _MISS_TICKS])
    ax.minorticks_off()
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("miss rate")
    ax.grid(True, which="major", linestyle=":")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left", fontsize=9, title="MR$^{-2}$")


def plot_miss_rate_curves(curves: Sequence[Tuple[str, SettingResult]], path: str, title: str = "") -> None:
    """Draw the curves (:func:`draw_miss_rate_curves`) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    draw_miss_rate_curves(ax, curves, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
