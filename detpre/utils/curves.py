"""Metric curves of Detectron2 runs, drawn on one figure.

*Rethinking ImageNet Pre-training*'s central figure is AP against training iterations for
random initialization and pre-training, several schedules on one plot. Detectron2 already
records what it needs: ``metrics.json`` in a run's output directory (read by
:mod:`detpre.utils.metrics`), where evaluation results appear as keys such as ``bbox/AP`` on
the iterations at which the ``EvalHook`` ran, and ``config.yaml`` beside it with the batch
size. This module turns runs into curves and draws them by the project's figure policy
(:mod:`kaisteval.figures`): a colour per run or group of runs, a line style and marker per
sub-group, the legend outside the data, final values labelled without overlap, integer
iteration ticks and percentages on an axis that stops at 100.
"""

import math
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kaisteval.figures import StylePolicy, label_final_values, new_figure, save_figure
from kaisteval.plot import MISS_RATE_TICKS, set_miss_rate_axis

from .metrics import METRICS_FILE, is_miss_rate, is_percentage, metric_series, metrics_path

__all__ = ["Curve", "RunSpec", "draw_curves", "plot_curves", "read_ims_per_batch", "run_curve"]


def read_ims_per_batch(run: str) -> int:
    """``SOLVER.IMS_PER_BATCH`` of a run, from the ``config.yaml`` Detectron2 saves beside its metrics."""
    path = os.path.join(os.path.dirname(metrics_path(run)), "config.yaml")
    try:
        with open(path) as f:
            ims = yaml.safe_load(f)["SOLVER"]["IMS_PER_BATCH"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No {path}: images seen are computed from the run's SOLVER.IMS_PER_BATCH, which "
            "Detectron2 saves there; plot against iterations instead."
        ) from None
    except (KeyError, TypeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read SOLVER.IMS_PER_BATCH ({e!r}).") from None
    if not isinstance(ims, int) or ims <= 0:
        raise ValueError(f"{path}: SOLVER.IMS_PER_BATCH is {ims!r}, expected a positive integer.")
    return ims


@dataclass(frozen=True)
class RunSpec:
    """A run to plot: its directory (or metrics file) and the label of its curve."""

    path: str
    label: str

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        """``DIR`` or ``DIR:LABEL``; a path that exists is never split at a colon."""
        if os.path.exists(text) or ":" not in text:
            path, label = text, ""
        else:
            path, _, label = text.rpartition(":")
        path = path.rstrip(os.sep) or path
        if os.path.basename(path) == METRICS_FILE:
            default = os.path.basename(os.path.dirname(os.path.abspath(path)))
        else:
            default = os.path.basename(os.path.abspath(path))
        return cls(path, label or default)


@dataclass(frozen=True)
class Curve:
    """One line: its legend label and ``(x, y)`` points. Curves of one ``group`` (by default
    each label is its own) share a colour; within a group, ``subgroup`` picks the line style
    and marker (the init study: group = initialization, subgroup = schedule)."""

    label: str
    points: Sequence[Tuple[float, float]]
    group: str = ""
    subgroup: str = ""


def run_curve(spec: RunSpec, metric: str, x_axis: str = "iterations") -> Curve:
    """The curve of ``metric`` for one run, x in iterations or in images seen."""
    series = metric_series(spec.path, metric)
    if x_axis == "images":
        ims = read_ims_per_batch(spec.path)
        series = [(it * ims, v) for it, v in series]
    elif x_axis != "iterations":
        raise ValueError(f"Unknown x axis {x_axis!r}: expected 'iterations' or 'images'.")
    return Curve(spec.label, series)


def _percentage_axis(ax, metric: str, log_miss_rate: bool) -> None:
    """A percentage never runs past 100 (nor an AP below 0); a miss rate, lower being better,
    is 0-100 % or, with ``log_miss_rate``, the toolbox's log axis up to 100 %."""
    if is_miss_rate(metric) and log_miss_rate:
        values = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y) and y > 0]
        lowest = 0.9 * min(values, default=100.0)
        # Down to the toolbox's tick below the best value (or below it, past the last tick).
        bottom = max([100.0 * t for t in MISS_RATE_TICKS if 100.0 * t <= lowest], default=0.8 * lowest)
        set_miss_rate_axis(ax, (bottom, 100.0), scale=100.0)
    elif is_miss_rate(metric):
        ax.set_ylim(0.0, 100.0)
    else:
        ax.set_ylim(0.0, min(100.0, ax.get_ylim()[1]))


def draw_curves(
    curves: Iterable[Curve],
    xlabel: str = "iterations",
    ylabel: str = "bbox/AP",
    title: Optional[str] = None,
    metric: Optional[str] = None,
    log_miss_rate: bool = False,
    group_title: str = "",
    subgroup_title: str = "",
    x_ticks: Optional[Sequence[float]] = None,
    label_ends: bool = True,
) -> Figure:
    """``curves`` on one figure; ``metric`` (by default ``ylabel``) decides the y axis:
    percentages (AP, MR) stop at 100, miss rates say that lower is better. The x axis has
    integer ticks (iterations, images), or ``x_ticks``. ``group_title`` and
    ``subgroup_title`` head the legend's sections; ``label_ends`` writes each final value."""
    curves = list(curves)
    if not curves:
        raise ValueError("No curves to plot.")
    metric = metric or ylabel
    grouped = any(c.subgroup for c in curves)
    styles = StylePolicy([c.group or c.label for c in curves], [c.subgroup for c in curves] if grouped else ())
    fig = new_figure(7.2, 4.4, dpi=120)
    ax = fig.subplots()
    # A percentage of 0 or 100 lies on the frame: drawn unclipped, its marker stays whole.
    clip = not is_percentage(metric)
    ends = []
    for curve in curves:
        style = styles.style(curve.group or curve.label, curve.subgroup if grouped else None)
        xs, ys = zip(*curve.points) if curve.points else ((), ())
        ax.plot(xs, ys, markersize=4, linewidth=1.6, clip_on=clip, **style.line_kwargs())
        finite = [(x, y) for x, y in curve.points if math.isfinite(y)]
        if finite and label_ends:  # the final value, as the paper's figure annotates each curve
            ends.append((*finite[-1], f"{finite[-1][1]:.1f}", style.color))
    ax.margins(x=0.1 if label_ends else 0.03)  # room for the final-value labels
    if is_percentage(metric):
        _percentage_axis(ax, metric, log_miss_rate)
    label_final_values(ax, ends)
    if x_ticks is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xticks(list(x_ticks))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (lower is better)" if is_miss_rate(metric) else ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    styles.legend(ax, group_title, subgroup_title)
    return fig


def plot_curves(curves: Iterable[Curve], output: str, **kwargs) -> str:
    """Draw ``curves`` (:func:`draw_curves`, which takes the keyword arguments) and save the
    figure to ``output`` (format from its suffix)."""
    return save_figure(draw_curves(curves, **kwargs), output)
