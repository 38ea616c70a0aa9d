"""kaisteval: the KAIST protocol on hand-built cases whose answer is derived by hand.

Each case names the trap of public ports it guards against. Expected miss rates are
derived in the comments from the toolbox's rules (bbGt evalRes/compRoc, kaist_eval_full):
recall at a reference FPPI is the one of the last curve point with FPPI <= ref (0 before the
first point), MR = exp(mean(log(max(1e-10, miss)))).
"""

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest

from kaisteval import Detections, evaluate, load_ground_truth, read_image_set
from kaisteval.bbgt import BBGTFormatError, parse_bbgt, read_bbgt, read_bbgt_arrays, read_bbgt_many
from kaisteval.detections import DetectionFormatError, read_detections, write_detections
from kaisteval.frames import parse_frame
from kaisteval.matching import sample_miss_rate
from kaisteval.protocol import REF_FPPI

HEADER = "% bbGt version=3"
# MATLAB's 10.^(-2:.25:0), as sprintf('%.17g') prints it: the doubles nearest to 10^x.
REF = np.array(
    [
        0.01,
        0.017782794100389229,
        0.031622776601683791,
        0.056234132519034911,
        0.1,
        0.17782794100389229,
        0.31622776601683794,
        0.56234132519034907,
        1.0,
    ]
)


def obj(label: str, x: float, y: float, w: float, h: float, occ: int = 0, ign: int = 0, ang: int = 0) -> str:
    return f"{label} {x} {y} {w} {h} {occ} 0 0 0 0 {ign} {ang}"


PERSON = (100, 100, 40, 100)  # a Reasonable person: h >= 55, inside [5,635] x [5,507]


def log_average(miss: Sequence[float]) -> float:
    """MR in percent from the nine hand-derived miss rates."""
    return 100.0 * math.exp(sum(math.log(max(1e-10, m)) for m in miss) / len(miss))


def make_set(tmp_path: Path, frames: Dict[str, List[str]], flat: bool = True) -> Tuple[str, str]:
    """Write bbGt files (flat or tree layout) and the image set listing ``frames`` in order."""
    ann = tmp_path / "annotations"
    for name, lines in frames.items():
        path = ann / (name.replace("/", "_") + ".txt") if flat else ann / (name + ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([HEADER] + lines) + "\n")
    image_set = tmp_path / "set.txt"
    image_set.write_text("\n".join(frames) + "\n")
    return str(ann), str(image_set)


def run(tmp_path: Path, frames: Dict[str, List[str]], dets: Sequence[Tuple[int, Sequence[float], float]]):
    """Evaluate detections given as (0-based frame, (x, y, w, h), score) in file order."""
    ann, image_set = make_set(tmp_path, frames)
    fr = read_image_set(image_set)
    gt = load_ground_truth(ann, fr)
    d = Detections(
        np.array([f for f, _, _ in dets], dtype=np.int64),
        np.array([b for _, b, _ in dets], dtype=np.float64).reshape(-1, 4),
        np.array([s for _, _, s in dets], dtype=np.float64),
    )
    return evaluate(gt, fr, d)


def mr(results, setting: str = "Reasonable-all") -> float:
    return 100.0 * results[setting].mr


DAY = ["set06/V000/I%05d" % i for i in (19, 39, 59, 79)]


# ---------------------------------------------------------------- bbGt parser


def test_parse_bbgt_versions_and_fields():
    v3 = parse_bbgt(HEADER + "\n" + obj("person", 1, 2, 3, 4, occ=1, ign=1, ang=30) + "\n\n")
    assert v3[0].label == "person" and v3[0].box_xywh == (1, 2, 3, 4) and v3[0].box_xyxy == (1, 2, 4, 6)
    assert (v3[0].occlusion, v3[0].ignore, v3[0].angle) == (1, 1, 30)
    v2 = parse_bbgt("% bbGt version=2\npeople 1 2 3 4 2 5 6 7 8 1\n")
    assert (v2[0].occlusion, v2[0].vx, v2[0].vh, v2[0].ignore, v2[0].angle) == (2, 5, 8, 1, 0)
    v0 = parse_bbgt("cyclist 1 2 3 4 0 0 0 0 0\n")  # no header: version 0, 10 fields
    assert v0[0].label == "cyclist" and v0[0].ignore == 0
    assert parse_bbgt(HEADER + "\n") == []


@pytest.mark.parametrize(
    "text, message",
    [
        (HEADER + "\nperson 1 2 3 4 0 0 0 0 0 0\n", "f.txt:2: expected 12 fields"),
        (HEADER + "\nperson 1 2 x 4 0 0 0 0 0 0 0\n", "f.txt:2: non-numeric"),
        (HEADER + "\nperson 1 2 -3 4 0 0 0 0 0 0 0\n", "f.txt:2: negative box size"),
        ("% bbGt version=7\n", "f.txt:1: unknown bbGt version 7"),
        ("% something else\n", "f.txt:1: expected header"),
    ],
)
def test_parse_bbgt_errors_name_file_and_line(text, message):
    with pytest.raises(BBGTFormatError, match=message):
        parse_bbgt(text, "f.txt")


def test_read_bbgt_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_bbgt(tmp_path / "nope.txt")


def test_read_bbgt_many_matches_the_strict_parser(tmp_path):
    files = {
        "a.txt": HEADER + "\n" + obj("person", 1, 2, 3, 4) + "\n" + obj("people", 5, 6, 7, 8, occ=2) + "\n",
        "b.txt": HEADER + "\n",
        "c.txt": "% bbGt version=2\nperson? 9 9 9 9 1 0 0 0 0 1\n",  # slow path, stays in file order
        "d.txt": HEADER + "\ncyclist  10\t11 12 13 0 0 0 0 0 0 0\n",  # odd spacing: slow path
        "e.txt": HEADER + "\n" + obj("person", 20, 21, 22, 23, ang=10) + "\n",
    }
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    frame, arrays = read_bbgt_many(paths)
    assert frame.tolist() == [0, 0, 2, 3, 4]
    for i, p in enumerate(paths):
        one = read_bbgt_arrays(p)
        sel = frame == i
        assert arrays.labels[sel].tolist() == one.labels.tolist()
        np.testing.assert_array_equal(arrays.boxes[sel], one.boxes)
        np.testing.assert_array_equal(arrays.occlusion[sel], one.occlusion)
        np.testing.assert_array_equal(arrays.ignore[sel], one.ignore)
        np.testing.assert_array_equal(arrays.angle[sel], one.angle)


def test_read_bbgt_many_names_the_bad_file_and_line(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(HEADER + "\n" + obj("person", 1, 2, 3, 4) + "\n")
    bad.write_text(HEADER + "\n" + obj("person", 1, 2, 3, 4) + "\nperson 1 2 3 four 0 0 0 0 0 0 0\n")
    with pytest.raises(BBGTFormatError, match=r"bad.txt:3: non-numeric"):
        read_bbgt_many([good, bad])


# ---------------------------------------------------------------- frames


def test_frame_names_both_layouts_and_errors(tmp_path):
    assert parse_frame("set06/V001/I00459") == parse_frame("set06_V001_I00459.txt") == (6, 1, 459)
    assert parse_frame("set06/V001/I00459").day and not parse_frame("set09/V000/I01139").day
    bad = tmp_path / "bad.txt"
    bad.write_text("set06/V000/I00019\nset6/V0/I1\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a KAIST frame name"):
        read_image_set(str(bad))


@pytest.mark.parametrize("flat", [True, False])
def test_both_annotation_layouts_give_the_same_ground_truth(tmp_path, flat):
    ann, image_set = make_set(tmp_path, {DAY[0]: [obj("person", *PERSON)], DAY[1]: []}, flat=flat)
    gt = load_ground_truth(ann, read_image_set(image_set))
    assert gt.frame.tolist() == [0] and gt.boxes.tolist() == [list(PERSON)]


def test_missing_annotation_file_is_named(tmp_path):
    ann, image_set = make_set(tmp_path, {DAY[0]: [], DAY[1]: []})
    Path(ann, DAY[1].replace("/", "_") + ".txt").unlink()
    with pytest.raises(FileNotFoundError, match="set06_V000_I00039.txt"):
        load_ground_truth(ann, read_image_set(image_set))
    with pytest.raises(FileNotFoundError, match="annotation directory not found: .*elsewhere"):
        load_ground_truth(str(Path(ann) / "elsewhere"), read_image_set(image_set))


# ---------------------------------------------------------------- detection files


def test_text_and_json_frame_indexing(tmp_path):
    """Trap: text frames are 1-based, JSON image_ids 0-based; both name the first frame."""
    txt, js = tmp_path / "d.txt", tmp_path / "d.json"
    txt.write_text("1,100,100,40,100,0.9\n% comment\n\n2 5 6 7 8 0.1\n")
    js.write_text(
        '[{"image_id": 0, "bbox": [100, 100, 40, 100], "score": 0.9, "category_id": 1},'
        ' {"image_id": 1, "bbox": [5, 6, 7, 8], "score": 0.1}]'
    )
    a, b = read_detections(str(txt), 2), read_detections(str(js), 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.frame.tolist() == [0, 1]
    out = tmp_path / "w.txt"
    write_detections(str(out), a)
    assert out.read_text().splitlines()[0] == "1,100.0000,100.0000,40.0000,100.0000,0.90000000"
    np.testing.assert_array_equal(read_detections(str(out), 2).frame, a.frame)


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,1,1,1,1,0.5\n1,1,1,1,0.5\n", r"d.txt:2: expected 6 numbers"),
        ("1,1,1,1,1,0.5\n1,1,1,abc,1,0.5\n", r"d.txt:2: expected 6 numbers"),
        ("1,1,1,1,1,0.5\n\n0,1,1,1,1,0.5\n", r"d.txt:3: frame index out of range 1..3"),
        ("4,1,1,1,1,0.5\n", r"d.txt:1: frame index out of range"),
        ("1.5,1,1,1,1,0.5\n", r"d.txt:1: frame index is not an integer"),
        ("1,1,1,-1,1,0.5\n", r"d.txt:1: negative box width"),
        ('[{"image_id": 3, "bbox": [1, 1, 1, 1], "score": 1}]', r"d.txt: entry 0: frame index out of range 0..2"),
        (
            '[{"image_id": 0, "bbox": [1, 1, 1, 1], "score": 1}, {"image_id": 0, "bbox": [1, 1]}]',
            r"d.txt: entry 1: expected",
        ),
        ('{"image_id": 0}', r"expected a JSON list"),
    ],
)
def test_bad_detection_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.txt"
    path.write_text(content)
    with pytest.raises(DetectionFormatError, match=message):
        read_detections(str(path), 3)


# ---------------------------------------------------------------- the protocol, by hand


def test_sampling_before_the_first_fppi_point_is_a_full_miss():
    """Trap: refs below the first FPPI point get recall 0 (the -inf sentinel), not the first point's."""
    fppi, recall = np.array([0.5, 0.5, 0.5]), np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(sample_miss_rate(fppi, recall, REF), [1, 1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(REF_FPPI, REF, rtol=0, atol=0)


def test_reference_fppi_points_are_the_exact_powers_of_ten():
    """Trap: 10.0 ** np.linspace(-2, 0, 9) gives 0.09999999999999999 for 10^-1 (and 10^-1.25
    one ulp low) on NumPy's vectorised pow; MATLAB's 10.^-1 is 0.1."""
    assert REF_FPPI.tolist() == REF.tolist()
    assert REF_FPPI[0] == float("1e-2") and REF_FPPI[4] == float("1e-1") and REF_FPPI[8] == 1.0


def test_one_false_positive_in_ten_frames_is_fppi_point_one_exactly(tmp_path):
    # 10 frames, a person in each. TPs (.9) on frames 0-4: recall .5 at FPPI 0. A FP (.8) on
    # frame 5: FPPI 1/10 = 0.1. TPs (.7) on frames 5-7: recall .8, still at FPPI 0.1. The four
    # refs below 0.1 miss .5; the five from 0.1 = 10^-1 on miss .2 (MATLAB: 30.05). With a
    # reference point of 0.09999999999999999 the fifth would miss .5 too (33.27).
    names = ["set06/V000/I%05d" % (19 + 20 * i) for i in range(10)]
    frames = {name: [obj("person", *PERSON)] for name in names}
    dets = [(i, PERSON, 0.9) for i in range(5)] + [(5, (300, 100, 40, 100), 0.8)]
    dets += [(i, PERSON, 0.7) for i in (5, 6, 7)]
    res = run(tmp_path, frames, dets)
    np.testing.assert_allclose(res["Reasonable-all"].miss_at_ref, [0.5] * 4 + [0.2] * 5, rtol=1e-12)
    assert mr(res) == pytest.approx(log_average([0.5] * 4 + [0.2] * 5)) and round(mr(res), 2) == 30.05


def test_tiny_image_set_where_low_fppi_points_are_never_reached(tmp_path):
    # 2 frames, one person each. Scores: FP .9 (frame 0), TP .8 (frame 0), TP .7 (frame 1).
    # fppi = [.5 .5 .5], recall = [0 .5 1]: refs < .5 (7 of 9, up to 10^-.5) miss 1; .562 and 1 miss 0.
    res = run(
        tmp_path,
        {DAY[0]: [obj("person", *PERSON)], DAY[1]: [obj("person", *PERSON)]},
        [(0, (300, 100, 40, 100), 0.9), (0, PERSON, 0.8), (1, PERSON, 0.7)],
    )
    assert mr(res) == pytest.approx(log_average([1] * 7 + [0] * 2))


def test_detections_are_matched_in_descending_score_order_whatever_the_file_order(tmp_path):
    # One person, two detections on it, listed low score first. Greedy by score: B (.8, IoU .6)
    # takes the person, A (.3, IoU 1) is a false positive after it: fppi [0 1], recall [1 1]
    # -> miss 0 at every ref. In file order A would win and B, the top score, be a FP first:
    # fppi [1 1], recall [0 1] -> miss 1 at the 8 refs below 1.
    b = (100, 100, 40, 100 * 0.6)  # inside the person: IoU = 0.6
    res = run(tmp_path, {DAY[0]: [obj("person", *PERSON)]}, [(0, PERSON, 0.3), (0, b, 0.8)])
    assert mr(res) == pytest.approx(log_average([0] * 9))
    assert res["Reasonable-all"].fppi.tolist() == [0.0, 1.0]


def test_equal_scores_in_one_frame_keep_the_file_order_as_matlab_does(tmp_path):
    # One person; A on it, B elsewhere in the frame, both scored .5. A listed first: TP then FP,
    # fppi [0 1], recall [1 1] -> miss 0 everywhere. B first: fppi [1 1], recall [0 1] -> miss 1
    # at the 8 refs below 1. The toolbox's stable sorts make the line order decide between them.
    frames = {DAY[0]: [obj("person", *PERSON)]}
    a, b = (0, PERSON, 0.5), (0, (300, 100, 40, 100), 0.5)
    assert mr(run(tmp_path / "ab", frames, [a, b])) == pytest.approx(log_average([0] * 9))
    assert mr(run(tmp_path / "ba", frames, [b, a])) == pytest.approx(log_average([1] * 8 + [0]))


def test_tied_pairs_count_equal_scores_within_a_frame_only():
    # Frame 0: three detections at .5 (3 pairs) and one at .4; frame 1: one at .5 (equal to
    # frame 0's, but pooled in image-set order whatever the file order: not counted), two at .3.
    frame = np.array([0, 1, 0, 1, 0, 1, 0])
    scores = np.array([0.5, 0.5, 0.5, 0.3, 0.5, 0.3, 0.4])
    dets = Detections(frame, np.zeros((len(frame), 4)), scores)
    assert dets.tied_pairs() == 4
    assert Detections.empty().tied_pairs() == 0
    assert Detections(frame, np.zeros((7, 4)), np.arange(7.0)).tied_pairs() == 0


def test_curve_pools_images_in_score_order(tmp_path):
    # 4 frames, persons in frames 0 and 3. TP .9 (f0), FP .8 (f1), FP .7 (f2), TP .6 (f3), given
    # in reverse order: fppi [0 .25 .5 .5], recall [.5 .5 .5 1]. Refs <= 0.316 -> miss .5 (7),
    # .562 and 1 -> miss 0.
    frames = {DAY[0]: [obj("person", *PERSON)], DAY[1]: [], DAY[2]: [], DAY[3]: [obj("person", *PERSON)]}
    dets = [(3, PERSON, 0.6), (2, (300, 50, 40, 100), 0.7), (1, (300, 50, 40, 100), 0.8), (0, PERSON, 0.9)]
    res = run(tmp_path, frames, dets)
    assert mr(res) == pytest.approx(log_average([0.5] * 7 + [0] * 2))
    np.testing.assert_allclose(res["Reasonable-all"].fppi, [0, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(res["Reasonable-all"].miss, [0.5, 0.5, 0.5, 0])


def test_iou_uses_continuous_boxes_and_at_least_half(tmp_path):
    """Trap: off-by-one pixel conventions. Boxes are x, y, w, h with area w*h (no +1)."""
    person = [obj("person", *PERSON)]
    # Width 80 over the 40-wide person: IoU = 4000 / 8000 = 0.5 exactly -> a match (>= .5).
    at_half = run(tmp_path / "a", {DAY[0]: person}, [(0, (100, 100, 80, 100), 0.9)])
    assert mr(at_half) == pytest.approx(log_average([0] * 9))
    # Width 81: IoU = 4000 / 8100 < .5 -> missed person and a FP (with the +1 convention it would be
    # 41*101 / (82*101) = .5, a match). fppi [1], recall [0]: miss 1 everywhere.
    below = run(tmp_path / "b", {DAY[0]: person}, [(0, (100, 100, 81, 100), 0.9)])
    assert mr(below) == pytest.approx(100.0)
    assert below["Reasonable-all"].n_detections == 1 and below["Reasonable-all"].recall == 0


def test_equal_iou_goes_to_the_last_object_in_file_order(tmp_path):
    # Persons A (x 100) and B (x 120); det1 (x 110, .9) has IoU .6 with both and takes the last, B;
    # det2 (x 98, .8) overlaps only A (IoU 3800/4200) and takes it: 2 TPs, miss 0 everywhere.
    # Had det1 taken A, det2 would be a FP and recall .5.
    frames = {DAY[0]: [obj("person", 100, 100, 40, 100), obj("person", 120, 100, 40, 100)]}
    res = run(tmp_path, frames, [(0, (110, 100, 40, 100), 0.9), (0, (98, 100, 40, 100), 0.8)])
    assert res["Reasonable-all"].recall == 1.0
    assert mr(res) == pytest.approx(log_average([0] * 9))


def test_a_matched_person_is_not_matched_again(tmp_path):
    # Two detections on one person: the second is a FP. 4 frames: fppi [0 .25], recall [1 1].
    frames = {DAY[0]: [obj("person", *PERSON)], DAY[1]: [], DAY[2]: [], DAY[3]: []}
    res = run(tmp_path, frames, [(0, PERSON, 0.9), (0, (101, 101, 40, 100), 0.8)])
    np.testing.assert_allclose(res["Reasonable-all"].fppi, [0, 0.25])
    assert res["Reasonable-all"].n_detections == 2


def test_ignore_regions_absorb_any_number_of_detections_by_detection_area(tmp_path):
    # A 'people' region 200x150 at (200, 100) and one person. Three detections inside the region
    # (intersection / detection area = 1), one half inside (exactly .5: absorbed), one 40% inside
    # (a FP). Curve: TP .95, then the FP .5 (the absorbed ones vanish): 2 frames ->
    # fppi [0 .5], recall [1 1], miss 0 everywhere; 2 detections on the curve.
    frames = {DAY[0]: [obj("people", 200, 100, 200, 150), obj("person", *PERSON)], DAY[1]: []}
    dets = [
        (0, (210, 110, 30, 60), 0.9),
        (0, (250, 110, 30, 60), 0.8),
        (0, (300, 150, 40, 80), 0.7),
        (0, (380, 110, 40, 60), 0.6),  # x 380..420 over the region's 200..400: half inside
        (0, (384, 110, 40, 60), 0.5),  # 16 of 40 px inside: 0.4
        (0, PERSON, 0.95),
    ]
    res = run(tmp_path, frames, dets)["Reasonable-all"]
    assert res.n_detections == 2 and res.n_persons == 1
    np.testing.assert_allclose(res.fppi, [0, 0.5])


def test_persons_are_preferred_to_ignore_regions_listed_before_them(tmp_path):
    # The ignore region comes first in the file; ground truth is sorted non-ignored first, so the
    # detection on the person is a TP (not absorbed), and a second one on it is absorbed by the
    # region (not a FP): 1 TP, nothing else on the curve.
    frames = {DAY[0]: [obj("people", 90, 90, 100, 150), obj("person", *PERSON)]}
    res = run(tmp_path, frames, [(0, PERSON, 0.9), (0, (102, 100, 40, 100), 0.8)])["Reasonable-all"]
    assert res.recall == 1.0 and res.n_detections == 1


def test_out_of_setting_persons_and_other_labels_are_ignore_regions(tmp_path):
    frames = {
        DAY[0]: [
            obj("person", 100, 100, 20, 54),  # too small for Reasonable (h < 55)
            obj("person", 2, 100, 40, 100),  # left edge outside xRng [5, 635]
            obj("person", 600, 100, 40, 100),  # right edge 640 > 635
            obj("person", 300, 420, 40, 100),  # bottom 520 > 507
            obj("person", 400, 100, 40, 100, occ=2),  # heavy occlusion
            obj("person", 500, 100, 40, 100, ign=1),  # marked ignore in the file
            obj("person?", 200, 300, 40, 100),
            obj("cyclist", 250, 300, 40, 100),
            obj("person", *PERSON, occ=1),  # the only Reasonable person (partial occlusion counts)
        ]
    }
    boxes = [
        (100, 100, 20, 54),
        (2, 100, 40, 100),
        (600, 100, 40, 100),
        (300, 420, 40, 100),
        (400, 100, 40, 100),
        (500, 100, 40, 100),
        (200, 300, 40, 100),
        (250, 300, 40, 100),
    ]
    res = run(tmp_path, frames, [(0, b, 0.9) for b in boxes] + [(0, PERSON, 0.1)])
    r = res["Reasonable-all"]
    assert r.n_persons == 1 and r.n_detections == 1 and r.recall == 1.0  # all 8 absorbed
    assert res["Occ=heavy"].n_persons == 1  # the heavy one (unmarked, inside, h 100)
    assert res["Occ=partial"].n_persons == 1


def test_unknown_labels_are_dropped_not_ignored(tmp_path):
    # bbLoad keeps only lbls + ilbls: a 'dog' box is no ignore region, a detection on it is a FP.
    res = run(
        tmp_path,
        {DAY[0]: [obj("dog", 300, 100, 40, 100), obj("person", *PERSON)]},
        [(0, PERSON, 0.9), (0, (300, 100, 40, 100), 0.8)],
    )["Reasonable-all"]
    np.testing.assert_allclose(res.fppi, [0, 1])


def test_scale_and_occlusion_ranges_are_inclusive(tmp_path):
    frames = {
        DAY[0]: [obj("person", 10 + 60 * i, 10, 20, h) for i, h in enumerate((44, 45, 114, 115, 116))]
        + [obj("person", 10, 300, 20, 60, occ=1)]
    }
    res = run(tmp_path, frames, [])
    assert res["Scale=far"].n_persons == 2  # 44, 45 (range [1 45])
    assert res["Scale=medium"].n_persons == 3  # 45, 114, 115
    assert res["Scale=near"].n_persons == 2  # 115, 116
    assert res["Reasonable-all"].n_persons == 4  # 114, 115, 116 and the partially occluded 60
    assert res["Occ=none"].n_persons == 5 and res["Occ=partial"].n_persons == 1
    assert mr(res) == pytest.approx(100.0)  # no detection: miss 1 everywhere


def test_detections_are_not_resized_or_height_filtered(tmp_path):
    # Caltech's dbEval drops detections outside hr/1.25..hr*1.25 and resizes them to aspect .41;
    # kaist_eval_full does neither. A 10 px false positive therefore counts: 1 frame,
    # FP .9 then TP .8 -> fppi [1 1], recall [0 1]: miss 1 at the 8 refs below 1, 0 at 1.
    res = run(tmp_path, {DAY[0]: [obj("person", *PERSON)]}, [(0, (400, 300, 4, 10), 0.9), (0, PERSON, 0.8)])
    assert mr(res) == pytest.approx(log_average([1] * 8 + [0]))
    # A perfect but thin (w 10) detection: IoU 1000/4000 < .5 after no resizing -> missed.
    thin = run(tmp_path / "t", {DAY[0]: [obj("person", *PERSON)]}, [(0, (115, 100, 10, 100), 0.9)])
    assert thin["Reasonable-all"].recall == 0


def test_rotated_boxes_use_the_extent_of_their_ellipse(tmp_path):
    # bbExtent (ellipse=1): a 40x100 box at 90 degrees spans 100x40 about the same centre (120, 150).
    res = run(tmp_path, {DAY[0]: [obj("person", *PERSON, ang=90)]}, [(0, (70, 130, 100, 40), 0.9)])
    assert res["Reasonable-all"].recall == 1.0


def test_day_night_split_comes_from_the_set_ids(tmp_path):
    """Trap: a hard-coded day/night index. Night and day frames interleaved, any subset."""
    frames = {
        "set09/V000/I00019": [obj("person", *PERSON)],
        "set06/V000/I00019": [obj("person", *PERSON)],
        "set01/V000/I00019": [obj("person", *PERSON)],  # a training set: day too
        "set04/V000/I00019": [obj("person", *PERSON)],
        "set11/V000/I00019": [],
    }
    # Detect the day persons only, plus a FP at night.
    res = run(tmp_path, frames, [(1, PERSON, 0.9), (2, PERSON, 0.9), (4, (300, 100, 40, 100), 0.5)])
    day, night, both = res["Reasonable-day"], res["Reasonable-night"], res["Reasonable-all"]
    assert (day.n_images, night.n_images, both.n_images) == (2, 3, 5)
    assert (day.n_persons, night.n_persons) == (2, 2)
    assert mr(res, "Reasonable-day") == pytest.approx(log_average([0] * 9))
    assert mr(res, "Reasonable-night") == pytest.approx(100.0)
    # All: TP TP (fppi 0, recall .5) then the FP (fppi .2): miss .5 everywhere.
    assert mr(res) == pytest.approx(50.0)


def test_an_empty_subset_is_undefined_not_an_error(tmp_path):
    res = run(tmp_path, {DAY[0]: [obj("person", *PERSON)]}, [(0, PERSON, 0.9)])
    assert res["Reasonable-night"].n_images == 0 and math.isnan(res["Reasonable-night"].mr)
    assert res["Reasonable-night"].to_dict()["MR"] is None


# ---------------------------------------------------------------- against a literal port


def _literal_eval_res(gt: np.ndarray, dt: np.ndarray, thr: float = 0.5):
    """bbGt>evalRes as the MATLAB loop reads (gt rows x y w h ign, dt rows x y w h score)."""
    dt = dt[np.argsort(-dt[:, 4], kind="stable")]
    gt = gt[np.argsort(gt[:, 4], kind="stable")]
    gt_m = -gt[:, 4].copy()
    dt_m = np.zeros(len(dt))
    for d in range(len(dt)):
        bst_oa, bst_g, bst_m = thr, -1, 0
        for g in range(len(gt)):
            m = gt_m[g]
            if m == 1:
                continue
            if bst_m != 0 and m == -1:
                break
            x0, y0, w0, h0 = dt[d, :4]
            x1, y1, w1, h1 = gt[g, :4]
            iw = min(x0 + w0, x1 + w1) - max(x0, x1)
            ih = min(y0 + h0, y1 + h1) - max(y0, y1)
            oa = 0.0
            if iw > 0 and ih > 0:
                t = iw * ih
                oa = t / (w0 * h0) if m == -1 else t / (w0 * h0 + w1 * h1 - t)
            if oa < bst_oa:
                continue
            bst_oa, bst_g, bst_m = oa, g, (1 if m == 0 else -1)
        if bst_m == -1:
            dt_m[d] = -1
        elif bst_m == 1:
            gt_m[bst_g] = 1
            dt_m[d] = 1
    return gt_m, np.column_stack([dt[:, 4], dt_m])


def _literal_miss(gts: List[np.ndarray], dts: List[np.ndarray]) -> np.ndarray:
    """evalRes per image, then compRoc (roc=1) sampled at the nine references."""
    gt_all, dt_all = [], []
    for gt, dt in zip(gts, dts):
        g, d = _literal_eval_res(gt, dt)
        gt_all.append(g)
        dt_all.append(d)
    g = np.concatenate(gt_all)
    d = np.concatenate(dt_all)
    g, d = g[g != -1], d[d[:, 1] != -1]
    if len(d) == 0:
        return np.ones(len(REF))
    order = np.argsort(-d[:, 0], kind="stable")
    tp = d[order, 1]
    fp = np.cumsum(tp != 1) / len(gts)
    rec = np.cumsum(tp) / len(g)
    xs1, ys1 = np.r_[-np.inf, fp], np.r_[0.0, rec]
    return np.array([1 - ys1[np.flatnonzero(xs1 <= r)[-1]] for r in REF])


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_matching_equals_the_literal_toolbox_loop(tmp_path, seed):
    # Crowded frames on a coarse grid, so that equal IoUs, equal scores, overlapping persons and
    # ignore regions are common; the nine miss rates of every setting must agree exactly.
    rng = np.random.default_rng(seed)
    n_frames = 12
    names = ["set%02d/V000/I%05d" % (6 + 3 * (i % 2), 19 + 20 * i) for i in range(n_frames)]
    labels = ["person"] * 6 + ["people", "person?", "cyclist"]
    frames, dets = {}, []
    for i, name in enumerate(names):
        lines = []
        for _ in range(rng.integers(0, 7)):
            x, y = 10 * rng.integers(0, 60), 10 * rng.integers(0, 45)
            w, h = 10 * rng.integers(2, 6), 10 * rng.integers(3, 14)
            lines.append(
                obj(labels[rng.integers(len(labels))], x, y, w, h, occ=rng.integers(0, 3), ign=int(rng.random() < 0.1))
            )
            for _ in range(rng.integers(0, 3)):  # detections near the object
                dets.append(
                    (i, (x + 10 * rng.integers(-2, 3), y + 10 * rng.integers(-2, 3), w, h), rng.integers(0, 5) / 4)
                )
        frames[name] = lines
        for _ in range(rng.integers(0, 3)):  # and anywhere
            dets.append((i, (10 * rng.integers(0, 60), 10 * rng.integers(0, 45), 40, 100), rng.integers(0, 5) / 4))
    results = run(tmp_path, frames, dets)
    gt = load_ground_truth(str(tmp_path / "annotations"), read_image_set(str(tmp_path / "set.txt")))
    from kaisteval.protocol import SETTINGS

    day = np.array([parse_frame(n).day for n in names])
    for setting in SETTINGS:
        ign = gt.ignored(setting)
        keep = {"all": np.ones(n_frames, bool), "day": day, "night": ~day}[setting.subset]
        gts = [np.column_stack([gt.boxes[gt.frame == f], ign[gt.frame == f]]) for f in np.flatnonzero(keep)]
        dts = [np.array([(*b, s) for j, b, s in dets if j == f]).reshape(-1, 5) for f in np.flatnonzero(keep)]
        if not any((g[:, 4] == 0).any() for g in gts):  # no person: MR undefined (NaN here)
            assert np.isnan(results[setting.name].miss_at_ref).all()
            continue
        np.testing.assert_array_equal(results[setting.name].miss_at_ref, _literal_miss(gts, dts), err_msg=setting.name)


# ---------------------------------------------------------------- the plot


def test_plot_shows_a_full_miss_inside_the_frame_and_reads_in_percent(tmp_path):
    from kaisteval.figures import PALETTE, new_figure
    from kaisteval.plot import draw_miss_rate_curves

    frames = {DAY[0]: [obj("person", *PERSON)], DAY[1]: [obj("person", *PERSON)]}
    half = run(tmp_path / "half", frames, [(0, PERSON, 0.9)])["Reasonable-all"]
    nothing = run(tmp_path / "none", frames, [(0, (300, 100, 40, 100), 0.9)])["Reasonable-all"]
    fig = new_figure(6, 5)
    ax = fig.subplots()
    draw_miss_rate_curves(ax, [("none", nothing), ("half", half)])
    # The figure policy's colours, best MR first, and the legend in the corner no curve runs through.
    assert [line.get_color() for line in ax.get_lines()] == list(PALETTE[:2])
    fig.canvas.draw()
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x1 < frame.x0 + frame.width / 2 and legend.y1 < frame.y0 + frame.height / 2
    # A detector that misses everyone is a line at 100%, below the top of the axes.
    top = ax.get_ylim()[1]
    assert nothing.miss.max() == 1.0 and top > 1.0
    assert max(line.get_ydata().max() for line in ax.get_lines()) < top
    # A curve without false positives (all at FPPI 0) still shows: its miss rate holds to the right.
    line = ax.get_lines()[0]
    assert line.get_xdata()[-1] == ax.get_xlim()[1] and line.get_ydata()[-1] == pytest.approx(0.5)
    # Legend and axis are in the same unit: the legend's 50.00% is a tick of the axis.
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["50.00% half", "100.00% none"]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert "50%" in ticks and "100%" in ticks and ax.get_yticks()[ticks.index("50%")] == 0.5
