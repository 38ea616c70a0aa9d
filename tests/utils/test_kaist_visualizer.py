"""detpre.utils.kaist_visualizer: KAIST frames drawn with the toolbox's matching, on a made-up frame
whose outcome is known: who is a true positive, a false positive, missed or ignored, and why."""

from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode
from matplotlib.text import Text

from detpre.utils.kaist_visualizer import KINDS, classify_frame, draw_frame, render_frame
from kaisteval.protocol import settings_by_name

REASONABLE, NIGHT = settings_by_name(["Reasonable-all", "Reasonable-night"])
PERSONS = {  # x, y, w, h, label, occlusion
    "found": (100, 150, 40, 100, "person", 0),
    "missed": (300, 150, 40, 100, "person", 0),
    "small": (200, 200, 15, 40, "person", 0),  # h 40 < 55: not counted in Reasonable
    "crowd": (450, 150, 80, 100, "people", 0),
    "occluded": (560, 150, 40, 100, "person", 2),  # heavy occlusion: not counted
}
DETECTIONS = [
    ((102, 152, 40, 100), 0.9),  # on "found": true positive
    ((104, 150, 40, 100), 0.8),  # its duplicate: false positive
    ((300, 150, 40, 100), 0.3),  # on "missed", under the threshold
    ((460, 160, 40, 80), 0.7),  # inside the "people" region: ignored
    ((20, 400, 40, 80), 0.6),  # on nobody: false positive
]


def frame_record(tmp_path: Path, brightness: int, set_id: str = "set09") -> dict:
    files = {}
    for modality in ("visible", "lwir"):
        files[modality] = str(tmp_path / f"{modality}.jpg")
        cv2.imwrite(files[modality], np.full((512, 640, 3), brightness, np.uint8))
    annotations = [
        {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "label": label, "occlusion": occ, "iscrowd": 0}
        for x, y, w, h, label, occ in PERSONS.values()
    ]
    return {
        "file_name": files["visible"],
        "lwir_file_name": files["lwir"],
        "image_id": 0,
        "set_id": set_id,
        "video_id": "V000",
        "frame_id": "I01139",
        "annotations": annotations,
    }


def kinds(view):
    return [(b.kind, tuple(round(v) for v in b.xywh), b.text) for b in view.boxes]


def test_each_box_has_the_outcome_of_the_toolbox_matching(tmp_path):
    view = classify_frame(frame_record(tmp_path, 20), DETECTIONS, REASONABLE, 0.5)
    assert set(kinds(view)) == {
        ("tp", (102, 152, 40, 100), "0.90"),
        ("fp", (104, 150, 40, 100), "0.80"),
        ("fp", (20, 400, 40, 80), "0.60"),
        ("ignored_detection", (460, 160, 40, 80), "0.70"),
        ("missed", (300, 150, 40, 100), ""),  # its only detection scores 0.3
        ("ignored", (200, 200, 15, 40), "h 40px"),
        ("ignored", (450, 150, 80, 100), "people"),
        ("ignored", (560, 150, 40, 100), "occluded"),
    }
    assert view.counts == {"tp": 1, "fp": 2, "ignored_detection": 1, "missed": 1, "ignored": 3}
    # Drawn bottom to top: ignored persons first, true positives last.
    order = [b.kind for b in view.boxes]
    assert order == sorted(order, key=list(KINDS).index)
    assert view.title() == (
        "set09/V000/I01139 (night), visible | LWIR  -  Reasonable-all, score >= 0.5: "
        "1 true positive(s), 2 false positive(s), 1 missed, 3 ignored"
    )
    assert view.note() == ""
    # At a lower threshold the 0.3 detection finds the missed person.
    low = classify_frame(frame_record(tmp_path, 20), DETECTIONS, REASONABLE, 0.25)
    assert low.counts["tp"] == 2 and "missed" not in low.counts


def test_notes_when_nothing_passes_or_the_setting_skips_the_frame(tmp_path):
    record = frame_record(tmp_path, 20)
    high = classify_frame(record, DETECTIONS, REASONABLE, 0.95)
    assert high.note() == "no detection scores >= 0.95 (best 0.90)"
    assert high.counts == {"missed": 2, "ignored": 3}
    assert classify_frame(record, [], REASONABLE, 0.5).note() == "no detection on this frame"
    day = classify_frame(frame_record(tmp_path, 20, set_id="set06"), DETECTIONS, NIGHT, 0.5)
    assert day.note() == "a day frame: Reasonable-night does not evaluate it"
    # Without predictions: the persons that count, and those that do not.
    gt_only = classify_frame(record, None, REASONABLE, 0.5)
    assert {k for k, _, _ in kinds(gt_only)} == {"person", "ignored"} and gt_only.counts["person"] == 2
    assert gt_only.note() == "" and "no detections given" in gt_only.title()
    # --no-gt: detections only, still coloured by the matching.
    hidden = classify_frame(record, DETECTIONS, REASONABLE, 0.5, show_gt=False)
    assert {k for k, _, _ in kinds(hidden)} == {"tp", "fp", "ignored_detection"} and hidden.counts["missed"] == 1


def pixel_colour(image_bgr, x, y):
    return image_bgr[y, x - 2 : x + 3].astype(int)


@pytest.mark.parametrize("brightness", [15, 240])  # a night frame, a bright thermal one
def test_boxes_are_coloured_and_outlined_and_labels_never_collide(tmp_path, brightness):
    record = frame_record(tmp_path, brightness)
    view = classify_frame(record, DETECTIONS, REASONABLE, 0.5)
    image = render_frame(record, view)
    assert image.shape == (512, 1280, 3)  # both frames at their own size, side by side
    for offset in (0, 640):
        for kind, (x, y, _, h) in [("missed", (300, 150, 40, 100)), ("fp", (20, 400, 40, 80))]:
            want = np.array(KINDS[kind].color[::-1]) * 255  # BGR
            edge = pixel_colour(image, x + offset, y + h // 2)
            assert (np.abs(edge - want).max(axis=1) < 40).any(), (kind, offset, edge)
            # The dark outline: a few pixels outside the line, the frame's own value is gone.
            assert image[y + h // 2, x + offset - 2].max() < 60
    fig = draw_frame(record, view)
    fig.canvas.draw()
    for ax in fig.axes:
        boxes = [Text.get_window_extent(t) for t in ax.texts]
        assert len(boxes) == 7  # four scores, three reasons
        for a, b in combinations(boxes, 2):
            assert not a.overlaps(b)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [KINDS[k].label for k in ("tp", "fp", "ignored_detection", "missed", "ignored")]
    assert fig.texts[0].get_text() == view.title()
