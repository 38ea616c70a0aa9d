"""How every figure of the project is drawn and saved: one Figure type, one policy, one writer.

The policy, so that a reader of any figure of detpre or kaisteval finds the same conventions:

* a bare ``matplotlib.figure.Figure`` on its own Agg canvas (:func:`new_figure`). Never
  pyplot, whose global figure registry leaks figures and picks a GUI backend on a desktop,
  and never ``matplotlib.use``, which would switch the backend of a whole host program;
* colour names a series or a group of series (an initialization, a model), line style and
  marker a sub-group (a schedule, a protocol): :class:`StylePolicy`. The palette is Okabe and
  Ito's, which stays distinguishable to colour-blind readers and in grey print;
* the legend stands outside the axes, right of them, never over the data
  (:func:`place_legend`), with one section per level when there are two;
* a curve's final value is written at its end, as *Rethinking ImageNet Pre-training*'s
  Figure 1 does, and the labels are moved apart vertically so that none overlaps another
  (:func:`label_final_values`, resolved by :func:`finish` once the layout is fixed);
* a figure is written whole or not at all (:func:`save_figure`, through
  :func:`kaisteval.files.atomic_write`), in the format of its path's suffix.

matplotlib is imported by this module only, and kaisteval imports it only to plot, so that
evaluating stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Annotation, Text

from .files import atomic_write

__all__ = [
    "FINAL_VALUE_GID",
    "LINE_STYLES",
    "MARKERS",
    "PALETTE",
    "Style",
    "StylePolicy",
    "finish",
    "label_final_values",
    "new_figure",
    "place_legend",
    "render_rgb",
    "save_figure",
]

#: Okabe & Ito's colour-blind-safe palette (without its yellow, unreadable on white), then
#: three of matplotlib's tab10 for studies with more groups.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#8C564B",  # brown
    "#7F7F7F",  # grey
    "#BCBD22",  # olive
)
LINE_STYLES: Tuple[Union[str, tuple], ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: The ``gid`` of final-value labels, by which :func:`finish` (and tests) find them.
FINAL_VALUE_GID = "final-value"
_LABEL_PAD_POINTS = 4.0  # between a curve's last point and its label
_LABEL_BOX_PAD = 0.15  # the label's white backing, in units of its font size, around the text


def new_figure(width: float, height: float, dpi: float = 100) -> Figure:
    """A bare Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


@dataclass(frozen=True)
class Style:
    """How one series is drawn."""

    color: str
    linestyle: Union[str, tuple] = "-"
    marker: str = "o"

    def line_kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


class StylePolicy:
    """Colour per group, line style and marker per sub-group, in the order they are given.

    With no sub-groups every series is a solid line with round markers, told apart by colour.
    """

    def __init__(self, groups: Iterable[str], subgroups: Iterable[str] = ()):
        self.groups = list(dict.fromkeys(groups))
        self.subgroups = list(dict.fromkeys(subgroups))

    def color(self, group: str) -> str:
        return PALETTE[self.groups.index(group) % len(PALETTE)]

    def style(self, group: str, subgroup: Optional[str] = None) -> Style:
        if subgroup is None or not self.subgroups:
            return Style(self.color(group))
        k = self.subgroups.index(subgroup)
        return Style(self.color(group), LINE_STYLES[k % len(LINE_STYLES)], MARKERS[k % len(MARKERS)])

    def legend(self, ax, group_title: str = "", subgroup_title: str = "") -> Legend:
        """The legend of both levels, outside the axes: colours (groups), then line styles
        and markers (sub-groups, drawn in grey) when there is more than one."""
        sections = [(group_title, [(g, Line2D([], [], color=self.color(g), linewidth=2)) for g in self.groups])]
        if len(self.subgroups) > 1:
            entries = []
            for s in self.subgroups:
                style = self.style(self.groups[0], s)
                entries.append((s, Line2D([], [], color="0.35", linestyle=style.linestyle, marker=style.marker)))
            sections.append((subgroup_title, entries))
        return place_legend(ax, sections)


def place_legend(ax, sections: Sequence[Tuple[str, Sequence[Tuple[str, Line2D]]]], fontsize: float = 9) -> Legend:
    """One legend right of ``ax``, top-aligned with it: each ``(title, [(label, handle)])``
    section under its title in bold (a section without a title has no heading)."""
    handles: List[Line2D] = []
    labels: List[str] = []
    headings: List[int] = []
    for title, entries in sections:
        if title:
            headings.append(len(labels))
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(title)
        for label, handle in entries:
            handles.append(handle)
            labels.append(label)
    legend = ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
        fontsize=fontsize,
        handlelength=2.6,
    )
    texts = legend.get_texts()
    for i in headings:
        texts[i].set_fontweight("bold")
    return legend


def label_final_values(ax, ends: Iterable[Tuple[float, float, str, str]], fontsize: float = 8) -> List[Annotation]:
    """Write ``text`` right of each ``(x, y, text, colour)`` end point, joined to it by a thin
    line; :func:`finish` moves the labels apart once the figure's layout is fixed. Ends with
    a non-finite ``y`` get no label. Leave room for the labels right of the data
    (``ax.margins(x=...)``); the layout does not count them."""
    labels = []
    for x, y, text, color in ends:
        if not np.isfinite(y):
            continue
        label = ax.annotate(
            text,
            (x, y),
            xytext=(_LABEL_PAD_POINTS, 0.0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=fontsize,
            color=color,
            annotation_clip=False,
            # A white backing keeps the value readable where it crosses another curve.
            bbox={"boxstyle": f"square,pad={_LABEL_BOX_PAD}", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.6, "shrinkA": 1, "shrinkB": 2},
        )
        label.set_gid(FINAL_VALUE_GID)
        label.set_in_layout(False)
        labels.append(label)
    return labels


def _text_box(label: Annotation, renderer):
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def _spread_final_values(ax, renderer) -> None:
    """Move the final-value labels of ``ax`` vertically, as little as they must, until no two
    whose columns overlap are closer than a small gap; keep them within the axes' height."""
    labels = [t for t in ax.texts if t.get_gid() == FINAL_VALUE_GID]
    if not labels:
        return
    for label in labels:
        label.xyann = (_LABEL_PAD_POINTS, 0.0)
    boxes = [_text_box(label, renderer) for label in labels]
    x0 = np.array([b.x0 for b in boxes])
    x1 = np.array([b.x1 for b in boxes])
    half = np.array([b.height / 2 for b in boxes])
    wanted = np.array([(b.y0 + b.y1) / 2 for b in boxes])
    # Two backings may touch, not cover each other's text: the gap is both paddings and a pixel.
    gap = 2 * _LABEL_BOX_PAD * labels[0].get_fontsize() * ax.figure.dpi / 72.0 + 1.0
    frame = ax.get_window_extent(renderer)
    low, high = frame.y0 + half, np.maximum(frame.y1 - half, frame.y0 + half)
    same_column = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None])
    centre = np.clip(wanted, low, high)
    for _ in range(500):  # relaxation: push every too-close pair apart, half each way
        moved = False
        for a in range(len(labels)):
            for b in range(a + 1, len(labels)):
                apart = centre[b] - centre[a]
                need = half[a] + half[b] + gap
                if same_column[a, b] and abs(apart) < need - 1e-6:
                    push = (need - abs(apart)) / 2 * (1.0 if apart >= 0 else -1.0)
                    centre[a] -= push
                    centre[b] += push
                    moved = True
        centre = np.clip(centre, low, high)
        if not moved:
            break
    points_per_pixel = 72.0 / ax.figure.dpi
    for label, c, w in zip(labels, centre, wanted):
        label.xyann = (_LABEL_PAD_POINTS, float((c - w) * points_per_pixel))


def finish(fig: Figure, layout: bool = True) -> Figure:
    """Lay ``fig`` out (``tight_layout``, which makes room for legends outside the axes), then
    place the final-value labels, which depend on where the axes ended up."""
    if layout:
        fig.tight_layout()
    fig.canvas.draw()  # settles the axes' limits, which the labels' positions depend on
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        _spread_final_values(ax, renderer)
    return fig


def save_figure(fig: Figure, path: str, layout: bool = True) -> str:
    """:func:`finish` ``fig`` and write it atomically to ``path``, in the format its suffix
    names (PNG without one); a failed write is a ``WriteError`` naming ``path``."""
    finish(fig, layout)
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=fig.dpi)
    return path


def render_rgb(fig: Figure) -> np.ndarray:
    """The pixels of ``fig`` as an ``[H, W, 3]`` uint8 RGB array (for figures that are images)."""
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba())[:, :, :3]
