"""KAIST frames drawn as the evaluation sees them: visible | LWIR, with the toolbox's own matching.

A miss rate is a count of persons found and missed and of false alarms; this draws, frame by
frame, which is which. For one KAIST setting (``Reasonable-all`` by default) and a score
threshold, the detections that pass the threshold are matched to the ground truth by
kaisteval's ``bbGt>evalRes`` (:class:`kaisteval.matching.Matcher`, the matching behind MR,
with the ground truth and ignore flags the evaluator builds from the dataset dicts), and:

* true positives are green, false positives red, detections absorbed by an ignore region
  (which count for nothing) grey and dotted, each with its score;
* persons no passing detection found are amber ("missed"); persons the setting does not
  count are grey and dashed, labelled with the reason (their label, ``h 40px``, ``occluded``,
  ``border`` or ``ignore flag``). Without detections, counted persons are green;
* a title names the frame (day or night), the setting, the threshold and the counts; a legend
  names the colours; a note says when no detection passes the threshold.

Every box has a dark outline and every label is black on a tag of its box's colour, so that
both stay visible on dark night frames as on bright thermal ones; labels are placed where
they cover no other label. The two images
keep their pixel size (the drawing is a Figure of exactly their size): a box drawn at ``x``
in the file is at column ``x`` of the left half and ``640 + x`` of the right.
"""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.transforms import Bbox

from kaisteval.figures import new_figure, render_rgb
from kaisteval.matching import FP, IGNORED, TP, Matcher
from kaisteval.protocol import IGNORE_LABELS, IOU_THRESHOLD, LABELS, OCCLUSION_LEVELS, GroundTruth, Setting

from ..data.image_io import read_image
from ..evaluation.kaist_evaluation import ground_truth_from_dicts

__all__ = [
    "KINDS",
    "Box",
    "FrameView",
    "Predictions",
    "classify_frame",
    "draw_frame",
    "read_predictions",
    "render_frame",
    "select",
]

# (x, y, w, h) box, score; per dataset position
Predictions = Dict[int, List[Tuple[Sequence[float], float]]]


@dataclass(frozen=True)
class Kind:
    """How one outcome is drawn and named in the legend."""

    label: str
    color: Tuple[float, float, float]
    linestyle: str = "-"


#: Every outcome a box can have, in drawing order (later ones on top) and legend order.
KINDS: Dict[str, Kind] = {
    "ignored": Kind("ignored person (not counted)", (0.78, 0.78, 0.78), "--"),
    "person": Kind("person (counted)", (0.1, 0.85, 0.1)),
    "missed": Kind("missed person", (1.0, 0.72, 0.0)),
    "ignored_detection": Kind("detection in an ignore region", (0.78, 0.78, 0.78), ":"),
    "fp": Kind("false positive", (0.95, 0.1, 0.1)),
    "tp": Kind("true positive", (0.1, 0.85, 0.1)),
}
_WITH_DETECTIONS = ("tp", "fp", "ignored_detection", "missed", "ignored")
_WITHOUT_DETECTIONS = ("person", "ignored")
_OUTLINE = withStroke(linewidth=4.4, foreground="black")  # about 2 dark pixels each side
_LINE_WIDTH = 1.6  # points: about 2 pixels at the figure's 100 dpi
_DPI = 100
_BANNER = {"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "boxstyle": "square,pad=0.3"}


@dataclass
class Box:
    """One box to draw: ``x, y, w, h`` in pixels, its :data:`KINDS` key and its label."""

    xywh: Tuple[float, float, float, float]
    kind: str
    text: str = ""


@dataclass
class FrameView:
    """What one frame shows: its name, boxes and counts under a setting and threshold."""

    name: str
    day: bool
    setting: Setting
    threshold: float
    with_detections: bool
    show_gt: bool = True
    boxes: List[Box] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)
    best_score: Optional[float] = None  # of all the frame's detections, passing or not

    @property
    def in_setting(self) -> bool:
        """Whether the setting evaluates this frame at all (Reasonable-day skips night frames)."""
        return self.setting.subset == "all" or (self.setting.subset == "day") == self.day

    def title(self) -> str:
        where = f"{self.name} ({'day' if self.day else 'night'}), visible | LWIR"
        if not self.with_detections:
            return (
                f"{where}  -  {self.setting.name}: {self.counts.get('person', 0)} counted, "
                f"{self.counts.get('ignored', 0)} ignored; no detections given"
            )
        c = self.counts
        return (
            f"{where}  -  {self.setting.name}, score >= {self.threshold:g}: {c.get('tp', 0)} true positive(s), "
            f"{c.get('fp', 0)} false positive(s), {c.get('missed', 0)} missed, {c.get('ignored', 0)} ignored"
        )

    def note(self) -> str:
        """What the boxes alone do not say: no detection passes, or the frame does not count."""
        notes = []
        if self.with_detections and not any(b.kind in ("tp", "fp", "ignored_detection") for b in self.boxes):
            notes.append(
                "no detection on this frame"
                if self.best_score is None
                else f"no detection scores >= {self.threshold:g} (best {self.best_score:.2f})"
            )
        if not self.in_setting:
            notes.append(f"a {'day' if self.day else 'night'} frame: {self.setting.name} does not evaluate it")
        return "; ".join(notes)


def read_predictions(path: str, dicts: List[dict]) -> Predictions:
    """Detections per position in ``dicts``: from Detectron2's ``instances_predictions.pth``
    (matched by ``image_id``), or a KAIST text / COCO-style json result file (``kaisteval``)."""
    found: Predictions = defaultdict(list)
    if path.endswith(".pth"):
        position = {d["image_id"]: i for i, d in enumerate(dicts)}
        for entry in torch.load(path, map_location="cpu"):
            if entry["image_id"] not in position:
                raise KeyError(f"{path}: image_id {entry['image_id']!r} is not a frame of the dataset.")
            for det in entry.get("instances", []):
                found[position[entry["image_id"]]].append((det["bbox"], float(det["score"])))
        return found
    from kaisteval.detections import read_detections

    detections = read_detections(path, len(dicts))
    for frame, box, score in zip(detections.frame, detections.boxes, detections.scores):
        found[int(frame)].append((box.tolist(), float(score)))
    return found


def select(dicts: List[dict], frames: Optional[Sequence[str]], max_frames: int) -> List[int]:
    """Positions of the frames to draw: the named ones (``setXX/VYYY/IZZZZZ``) or the first N."""
    if not frames:
        return list(range(min(max_frames, len(dicts))))
    position = {f"{d['set_id']}/{d['video_id']}/{d['frame_id']}": i for i, d in enumerate(dicts)}
    missing = [f for f in frames if f not in position]
    if missing:
        raise KeyError(f"Frames not in the dataset: {', '.join(missing)}")
    return [position[f] for f in frames]


def _ignore_reasons(gt: GroundTruth, labels: Sequence[str], setting: Setting) -> List[str]:
    """Why each object does not count under ``setting`` ("" for those that count), asked of
    the protocol's own filter with one condition relaxed at a time."""
    ignored = gt.ignored(setting)
    anywhere = gt.ignored(replace(setting, height=(0.0, float("inf")), occlusion=tuple(OCCLUSION_LEVELS)))
    any_height = gt.ignored(replace(setting, height=(0.0, float("inf"))))
    reasons = []
    for i, label in enumerate(labels):
        if not ignored[i]:
            reasons.append("")
        elif label in IGNORE_LABELS:
            reasons.append(label)
        elif gt.always_ignored[i]:
            reasons.append("ignore flag")
        elif anywhere[i]:
            reasons.append("border")
        elif any_height[i]:
            reasons.append("occluded")
        else:
            reasons.append(f"h {gt.raw_boxes[i, 3]:.0f}px")
    return reasons


def classify_frame(
    record: dict,
    detections: Optional[Sequence[Tuple[Sequence[float], float]]],
    setting: Setting,
    threshold: float,
    show_gt: bool = True,
    dataset_name: str = "",
) -> FrameView:
    """The boxes of one KAIST dataset dict under ``setting``: its detections (None when no
    predictions were given) that score at least ``threshold``, matched as ``bbGt>evalRes``
    matches them, and (with ``show_gt``) the persons missed and ignored."""
    frames, gt = ground_truth_from_dicts([record], dataset_name)
    # GroundTruth keeps the annotations whose label the protocol knows, in order.
    labels = [a.get("label", "person") for a in record.get("annotations", [])]
    labels = [label for label in labels if label in LABELS + IGNORE_LABELS]
    ignored = gt.ignored(setting)
    reasons = _ignore_reasons(gt, labels, setting)
    view = FrameView(frames[0].name, frames[0].day, setting, threshold, detections is not None, show_gt)
    matched = np.zeros(len(gt), dtype=bool)
    if detections is not None:
        view.best_score = max((float(s) for _, s in detections), default=None)
        kept = sorted(((b, float(s)) for b, s in detections if s >= threshold), key=lambda d: -d[1])
        boxes = np.array([b for b, _ in kept], dtype=np.float64).reshape(-1, 4)
        scores = np.array([s for _, s in kept], dtype=np.float64)
        # One frame, detections already in descending score order: the matcher keeps that order.
        matches = Matcher(np.zeros(len(kept), np.int64), boxes, scores, gt.frame, gt.boxes, 1).match(
            ignored, IOU_THRESHOLD
        )
        matched = matches.gt_matched
        outcome = {TP: "tp", FP: "fp", IGNORED: "ignored_detection"}
        for box, score, result in zip(boxes, scores, matches.result):
            view.boxes.append(Box(tuple(box), outcome[int(result)], f"{score:.2f}"))
    for i in range(len(gt)):
        if ignored[i]:
            kind = "ignored"
        elif detections is None:
            kind = "person"
        elif not matched[i]:
            kind = "missed"
        else:
            continue  # drawn as its true positive
        if show_gt:
            view.boxes.append(Box(tuple(gt.boxes[i]), kind, reasons[i]))
        view.counts[kind] = view.counts.get(kind, 0) + 1
    for box in view.boxes:
        if box.kind in ("tp", "fp", "ignored_detection"):
            view.counts[box.kind] = view.counts.get(box.kind, 0) + 1
    view.boxes.sort(key=lambda b: list(KINDS).index(b.kind))
    return view


def _candidates(x: float, y: float, w: float, h: float) -> List[Tuple[float, float, str, str]]:
    """Where a box's label may go, in order of preference: (x, y, ha, va) in image pixels
    (y down): above the box, left then right, below it, then inside its top corners."""
    return [
        (x, y - 2, "left", "bottom"),
        (x + w, y - 2, "right", "bottom"),
        (x, y + h + 2, "left", "top"),
        (x + w, y + h + 2, "right", "top"),
        (x + 3, y + 3, "left", "top"),
        (x + w - 3, y + 3, "right", "top"),
    ]


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (0 when they do not overlap)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _place_labels(ax, boxes: Sequence[Box], renderer) -> None:
    """Write each box's text where it overlaps no label already written and stays in the
    image; where no candidate is free, where it overlaps least. Scores come first."""
    frame = ax.get_window_extent(renderer)
    taken: List[Bbox] = []
    labelled = [b for b in boxes if b.text]
    labelled.sort(key=lambda b: b.kind not in ("tp", "fp", "ignored_detection"))
    for box in labelled:
        # Black on a tag of the box's colour: readable on dark night frames and bright thermal ones.
        text = ax.text(0, 0, box.text, fontsize=8, color="black", zorder=5, clip_on=True)
        text.set_bbox({"facecolor": KINDS[box.kind].color, "alpha": 0.9, "edgecolor": "none", "pad": 1.0})
        best = None
        for x, y, ha, va in _candidates(*box.xywh):
            text.set_position((x, y))
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            extent = text.get_window_extent(renderer)
            inside = _overlap(extent, frame) == extent.width * extent.height  # wholly in the image
            extent = extent.padded(2.0)
            cost = (not inside, sum(_overlap(extent, t) for t in taken))
            if best is None or cost < best[0]:
                best = (cost, (x, y, ha, va), extent)
            if cost == (False, 0.0):
                break
        (_, (x, y, ha, va), extent) = best
        text.set_position((x, y))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        taken.append(extent)


def draw_frame(record: dict, view: FrameView) -> Figure:
    """Visible | LWIR with ``view`` drawn on both: a Figure of exactly the two images' pixels
    (one axes each, left then right)."""
    panels = [read_image(record[key], cv2.IMREAD_COLOR)[:, :, ::-1] for key in ("file_name", "lwir_file_name")]
    if panels[0].shape != panels[1].shape:
        raise ValueError(f"{record['file_name']} and {record['lwir_file_name']} differ in size.")
    height, width = panels[0].shape[:2]
    fig = new_figure(2 * width / _DPI, height / _DPI, dpi=_DPI)
    renderer = fig.canvas.get_renderer()
    for i, image in enumerate(panels):
        ax = fig.add_axes((i / 2, 0.0, 0.5, 1.0))
        ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        for box in view.boxes:
            kind = KINDS[box.kind]
            x, y, w, h = box.xywh
            rect = Rectangle(
                (x, y), w, h, fill=False, edgecolor=kind.color, linewidth=_LINE_WIDTH, linestyle=kind.linestyle
            )
            rect.set_path_effects([_OUTLINE])
            rect.set_zorder(3)
            ax.add_patch(rect)
        _place_labels(ax, view.boxes, renderer)
    fig.text(0.003, 0.995, view.title(), ha="left", va="top", color="white", fontsize=9, bbox=_BANNER, zorder=6)
    note = view.note()
    if note:
        fig.text(0.5, 0.93, note, ha="center", va="top", color=KINDS["missed"].color, fontsize=10, bbox=_BANNER)
    kinds = [
        k
        for k in (_WITH_DETECTIONS if view.with_detections else _WITHOUT_DETECTIONS)
        if view.show_gt or k not in ("missed", "ignored", "person")
    ]
    handles = [Line2D([], [], color=KINDS[k].color, linestyle=KINDS[k].linestyle) for k in kinds]
    for handle in handles:
        handle.set_linewidth(_LINE_WIDTH)
        handle.set_path_effects([_OUTLINE])
    fig.legend(
        handles,
        [KINDS[k].label for k in kinds],
        loc="lower center",
        ncol=len(kinds),
        fontsize=8,
        labelcolor="white",
        facecolor="black",
        framealpha=0.6,
        edgecolor="none",
        borderaxespad=0.2,
        handlelength=2.2,
    )
    return fig


def render_frame(record: dict, view: FrameView) -> np.ndarray:
    """:func:`draw_frame` as a BGR array (twice the frame's width), for ``write_image``."""
    return render_rgb(draw_frame(record, view))[:, :, ::-1]
