"""kaisteval.figures, the figure policy of the whole project, and kaisteval.files, its one atomic writer."""

import tempfile
from itertools import combinations

import numpy as np
import pytest

from kaisteval.detections import Detections, write_detections
from kaisteval.figures import (
    FINAL_VALUE_GID,
    PALETTE,
    StylePolicy,
    finish,
    label_final_values,
    new_figure,
    place_legend,
    save_figure,
)
from kaisteval.files import WriteError


def final_labels(ax):
    return [t for t in ax.texts if t.get_gid() == FINAL_VALUE_GID]


def text_extent(label, fig):
    from matplotlib.text import Text

    return Text.get_window_extent(label, fig.canvas.get_renderer())


def test_colour_per_group_and_line_style_per_subgroup():
    styles = StylePolicy(["scratch", "imagenet", "scratch"], ["1x", "2x", "4x"])
    assert styles.groups == ["scratch", "imagenet"]
    one = {(g, s): styles.style(g, s) for g in styles.groups for s in styles.subgroups}
    # A group keeps its colour across sub-groups; a sub-group keeps its line style and marker across groups.
    assert {one[("scratch", s)].color for s in styles.subgroups} == {PALETTE[0]}
    assert {one[("imagenet", s)].color for s in styles.subgroups} == {PALETTE[1]}
    for s in styles.subgroups:
        assert one[("scratch", s)].linestyle == one[("imagenet", s)].linestyle
        assert one[("scratch", s)].marker == one[("imagenet", s)].marker
    assert len({(one[("scratch", s)].linestyle, one[("scratch", s)].marker) for s in styles.subgroups}) == 3
    assert StylePolicy(["a"]).style("a") == StylePolicy(["a"]).style("a", "any")  # no sub-groups: solid


def test_final_values_that_coincide_are_spread_apart_and_stay_by_their_curves():
    fig = new_figure(6, 4)
    ax = fig.subplots()
    ends = []
    for k, y in enumerate([50.0, 50.0, 50.2, 49.9, 80.0]):  # four labels on one spot, one apart
        ax.plot([0, 10], [0, y], color=PALETTE[k])
        ends.append((10, y, f"{y:.1f}", PALETTE[k]))
    ends.append((10, float("nan"), "nan", "k"))  # no label for a value that is not a number
    ax.set_ylim(0, 100)
    ax.margins(x=0.1)
    labels = label_final_values(ax, ends)
    assert len(labels) == 5 and final_labels(ax) == labels
    finish(fig)
    boxes = [text_extent(t, fig) for t in labels]
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b)
    frame = ax.get_window_extent()
    assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    # The lone label stays level with its point; the crowded ones stay close to theirs.
    point = ax.transData.transform((10, 80.0))[1]
    assert abs((boxes[4].y0 + boxes[4].y1) / 2 - point) < 1.0
    assert all(abs((b.y0 + b.y1) / 2 - ax.transData.transform((10, 50.0))[1]) < 40 for b in boxes[:4])
    # Each label is the colour of its curve.
    assert [t.get_color() for t in labels] == list(PALETTE[:5])


def test_legend_is_outside_the_axes_with_a_section_per_level():
    fig = new_figure(6, 4)
    ax = fig.subplots()
    styles = StylePolicy(["scratch", "imagenet"], ["1x", "2x"])
    for g in styles.groups:
        for s in styles.subgroups:
            ax.plot([0, 1], [0, 1], **styles.style(g, s).line_kwargs())
    legend = styles.legend(ax, "initialization", "schedule")
    finish(fig)
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["initialization", "scratch", "imagenet", "schedule", "1x", "2x"]
    assert [t.get_fontweight() for t in legend.get_texts()][::3] == ["bold", "bold"]
    box, frame = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 > frame.x1 and box.x1 <= fig.bbox.x1  # right of the data, inside the figure
    # One level only: no heading, no style section.
    one = place_legend(new_figure(4, 3).subplots(), [("", [("a", ax.get_lines()[0])])])
    assert [t.get_text() for t in one.get_texts()] == ["a"]


def test_save_figure_writes_the_format_of_the_suffix_atomically(tmp_path, monkeypatch):
    fig = new_figure(2, 2)
    fig.subplots().plot([0, 1], [1, 0])
    assert save_figure(fig, str(tmp_path / "sub" / "f.png")) == str(tmp_path / "sub" / "f.png")
    assert (tmp_path / "sub" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_figure(fig, str(tmp_path / "f.svg"))
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:500]
    target = tmp_path / "kept.png"
    target.write_bytes(b"previous")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        save_figure(fig, str(target))
    assert target.read_bytes() == b"previous"


def test_write_detections_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    out = tmp_path / "dets.txt"
    out.write_text("previous\n")
    detections = Detections(np.array([0]), np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([0.5]))
    write_detections(str(out), detections)
    assert out.read_text() == "1,1.0000,2.0000,3.0000,4.0000,0.50000000\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dets.txt"]  # no temporary file left

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match="Read-only file system"):
        write_detections(str(out), detections)
    assert out.read_text().startswith("1,1.0000")
