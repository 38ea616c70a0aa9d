"""KAIST registration: layouts, annotation versions, ignore regions, frame metadata, errors."""

import importlib.util
import os
from pathlib import Path
from typing import Dict, List

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

import detpre  # noqa: F401  (registers the builtin names)
from detpre.data.datasets.builtin import BUILTIN_KAIST
from detpre.data.datasets.kaist import (
    TRAINING_SETTING,
    TrainingSetting,
    load_kaist_dicts,
    pair_objects,
    register_kaist,
)
from kaisteval.bbgt import BBGTFormatError, BBGTObject
from kaisteval.frames import read_image_set

from conftest import REPO  # noqa: E402

HEADER = "% bbGt version=3\n"


def bbgt_line(label: str, x, y, w, h, occlusion=0, ignore=0) -> str:
    return f"{label} {x} {y} {w} {h} {occlusion} 0 0 0 0 {ignore} 0\n"


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_tree(root: Path, frames: Dict[str, Dict[str, str]], image_set: str = "mini") -> Path:
    """A KAIST root whose frames have empty image files and the given annotation files.

    ``frames`` maps ``setXX/VYYY/IZZZZZ`` to ``{relative annotation path: content}``.
    """
    for key, annotations in frames.items():
        set_id, video, frame = key.split("/")
        for modality in ("visible", "lwir"):
            write(root / "images" / set_id / video / modality / f"{frame}.jpg")
        for relative, text in annotations.items():
            write(root / relative, text)
    write(root / "imageSets" / f"{image_set}.txt", "".join(f"{k}\n" for k in frames))
    return root


def register_tmp(name: str, *args, **kwargs) -> List[dict]:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_kaist(name, *args, **kwargs)
    return DatasetCatalog.get(name)


def labels_and_crowd(d: dict):
    return [(a["label"], a["iscrowd"]) for a in d["annotations"]]


# ----------------------------------------------------------------------- real fixture


def test_fixture_registers_and_loads_with_frame_metadata(shared_data):
    root = shared_data / "kaist-fixture"
    dicts = register_tmp("kaist_fixture_test", str(root), "test-fixture", "original")
    keys = [line.strip() for line in (root / "imageSets" / "test-fixture.txt").read_text().split()]
    assert [f"{d['set_id']}/{d['video_id']}/{d['frame_id']}" for d in dicts] == keys
    assert [d["image_id"] for d in dicts] == list(range(len(keys)))
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and "/visible/" in d["file_name"]
        assert os.path.isfile(d["lwir_file_name"]) and "/lwir/" in d["lwir_file_name"]
        assert (d["width"], d["height"]) == (640, 512)
        assert d["day"] == (d["set_id"] in ("set06", "set07", "set08"))
    assert sum(d["day"] for d in dicts) == 4  # the fixture: 4 frames by day, 5 by night

    # Every line of the annotation files is in the dicts; only "person" is a positive.
    by_key = {f"{d['set_id']}/{d['video_id']}/{d['frame_id']}": d for d in dicts}
    for key, d in by_key.items():
        lines = (root / "annotations" / f"{key}.txt").read_text().splitlines()[1:]
        assert [(line.split()[0], int(line.split()[0] != "person")) for line in lines] == labels_and_crowd(d)
        first = lines[0].split()
        assert d["annotations"][0]["bbox"] == [float(v) for v in first[1:5]]
        assert d["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS
    people = by_key["set09/V000/I01139"]["annotations"][-1]
    assert people["label"] == "people" and people["iscrowd"] == 1

    meta = MetadataCatalog.get("kaist_fixture_test")
    assert meta.evaluator_type == "kaist"
    assert meta.thing_classes == ["person"]
    assert meta.image_root == str(root / "images")
    assert meta.annotation_dir == str(root / "annotations")
    assert meta.annotation_format == "bbgt"
    assert meta.image_set_file == str(root / "imageSets" / "test-fixture.txt")


def test_flat_improved_annotations_load_the_same_objects(shared_data):
    """The fixture's tree holds the improved annotations: the published flat files agree."""
    root = str(shared_data / "kaist-fixture")
    tree = register_tmp("kaist_fixture_tree", root, "test-fixture", "original")
    flat = register_tmp(
        "kaist_fixture_flat",
        root,
        "test-fixture",
        "improved",
        annotation_dir=str(shared_data / "kaist-annotations-test-improved"),
    )
    assert flat == tree
    assert MetadataCatalog.get("kaist_fixture_flat").annotation_format == "bbgt-flat"


def test_image_sets_of_the_real_splits_parse(shared_data):
    train = read_image_set(str(shared_data / "kaist-imagesets" / "train-all-02.txt"))
    test = read_image_set(str(shared_data / "kaist-imagesets" / "test-all-20.txt"))
    assert (len(train), len(test)) == (25086, 2252)
    assert sum(f.day for f in test) == 1455  # sets 06-08 by day, 09-11 by night
    assert {f.set_name for f in train} == {f"set{i:02d}" for i in range(6)}


# ------------------------------------------------------------------------ builtins


def test_builtin_names_are_registered_under_detectron2_datasets():
    root = os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "kaist")
    assert {
        "kaist_train_all02_paired",
        "kaist_train_all02_sanitized",
        "kaist_test_all20_improved",
        "kaist_test_all20",
    } <= set(BUILTIN_KAIST)
    formats = {"original": "bbgt", "paired": "bbgt-paired", "sanitized": "voc-xml", "improved": "bbgt-flat"}
    for name, (image_set, version, setting) in BUILTIN_KAIST.items():
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "kaist" and meta.thing_classes == ["person"]
        assert meta.image_root == os.path.join(root, "images")
        assert meta.image_set_file == os.path.join(root, "imageSets", f"{image_set}.txt")
        assert meta.annotation_format == formats[version]
        assert (setting is not None) == name.startswith("kaist_train")


# -------------------------------------------------------------- synthetic trees


def test_labels_ignore_flags_and_training_setting_make_ignore_regions(tmp_path):
    text = HEADER + "".join(
        [
            bbgt_line("person", 100, 100, 40, 90),  # positive
            bbgt_line("people", 200, 100, 60, 90),
            bbgt_line("cyclist", 300, 100, 40, 90),
            bbgt_line("person?", 400, 100, 40, 90),
            bbgt_line("person", 150, 150, 20, 80, ignore=1),  # the file's own ignore flag
            bbgt_line("person", 50, 200, 5, 10),  # under 12 px tall
            bbgt_line("person", 2, 100, 30, 80),  # crosses the 5-px border
            bbgt_line("person", 600, 420, 35, 87, occlusion=2),  # x + w = 635, y + h = 507: inside
        ]
    )
    root = make_tree(tmp_path, {"set00/V000/I00001": {"annotations/set00/V000/I00001.txt": text}})
    trained = register_tmp("kaist_tmp_setting", str(root), "mini", "original", setting=TRAINING_SETTING)
    assert [a["iscrowd"] for a in trained[0]["annotations"]] == [0, 1, 1, 1, 1, 1, 1, 0]
    assert trained[0]["annotations"][-1]["occlusion"] == 2
    tested = register_tmp("kaist_tmp_nosetting", str(root), "mini", "original")
    assert [a["iscrowd"] for a in tested[0]["annotations"]] == [0, 1, 1, 1, 1, 0, 0, 0]
    assert trained[0]["day"] and trained[0]["set_id"] == "set00"
    assert not TrainingSetting(min_height=50).accepts((100, 100, 20, 49))


def test_paired_annotations_keep_both_boxes(tmp_path):
    base = "annotations_paired/set03/V001/{}/I00002.txt"
    visible = HEADER + bbgt_line("person", 100, 100, 40, 80) + bbgt_line("person", 300, 120, 30, 60)
    lwir = HEADER + bbgt_line("person", 104, 98, 40, 80) + bbgt_line("person", 305, 121, 30, 60)
    root = make_tree(
        tmp_path,
        {"set03/V001/I00002": {base.format("visible"): visible, base.format("lwir"): lwir}},
    )
    [d] = register_tmp("kaist_tmp_paired", str(root), "mini", "paired")
    assert not d["day"]  # set03 was recorded at night
    first = d["annotations"][0]
    assert first["bbox_visible"] == [100.0, 100.0, 40.0, 80.0]
    assert first["bbox_lwir"] == [104.0, 98.0, 40.0, 80.0]
    assert first["bbox"] == first["bbox_visible"]
    assert MetadataCatalog.get("kaist_tmp_paired").annotation_dir == str(root / "annotations_paired")


def test_unequal_paired_files_are_matched_by_overlap():
    v = [BBGTObject("person", 100, 100, 40, 80), BBGTObject("person", 400, 100, 40, 80)]
    t = [
        BBGTObject("person", 402, 101, 40, 80),
        BBGTObject("person", 10, 10, 20, 40),
        BBGTObject("person", 99, 100, 40, 80),
    ]
    pairs = pair_objects(v, t)
    assert (v[0], t[2]) in pairs and (v[1], t[0]) in pairs and (None, t[1]) in pairs
    assert len(pairs) == 3


def test_sanitized_xml_annotations(tmp_path):
    xml = """<annotation><filename>I00003</filename>
      <object><name>person</name><bndbox><x>10</x><y>20</y><w>30</w><h>70</h></bndbox>
        <pose>unknown</pose><truncated>0</truncated><difficult>0</difficult><occlusion>1</occlusion></object>
      <object><name>cyclist</name><bndbox><x>100</x><y>120</y><w>40</w><h>60</h></bndbox></object>
    </annotation>"""
    path = "annotations-xml-new-sanitized/set01/V002/I00003.xml"
    root = make_tree(tmp_path, {"set01/V002/I00003": {path: xml}})
    [d] = register_tmp("kaist_tmp_sanitized", str(root), "mini", "sanitized")
    assert [(a["label"], a["bbox"], a["iscrowd"], a["occlusion"]) for a in d["annotations"]] == [
        ("person", [10.0, 20.0, 30.0, 70.0], 0, 1),
        ("cyclist", [100.0, 120.0, 40.0, 60.0], 1, 0),
    ]
    (root / path).write_text(xml.replace("<w>30</w>", "<w>wide</w>"))
    with pytest.raises(ValueError, match=r"I00003\.xml: object 1"):
        load_kaist_dicts(
            str(root / "images"), str(root / "imageSets/mini.txt"), str(root / path.split("/")[0]), "voc-xml"
        )


def test_malformed_annotation_line_names_the_file(tmp_path):
    path = "annotations/set00/V000/I00001.txt"
    root = make_tree(tmp_path, {"set00/V000/I00001": {path: HEADER + "person 1 2 3\n"}})
    with pytest.raises(BBGTFormatError, match=r"set00/V000/I00001\.txt:2"):
        register_tmp("kaist_tmp_malformed", str(root), "mini", "original")


def test_malformed_image_set_line_names_file_and_line(tmp_path):
    root = make_tree(tmp_path, {"set00/V000/I00001": {"annotations/set00/V000/I00001.txt": HEADER}})
    with open(root / "imageSets" / "mini.txt", "a") as f:
        f.write("set00/V000/1.jpg\n")
    with pytest.raises(ValueError, match=r"mini\.txt:2: expected a KAIST frame name 'setXX/VYYY/IZZZZZ'"):
        register_tmp("kaist_tmp_bad_set", str(root), "mini", "original")


def test_missing_modality_file_is_named(tmp_path):
    root = make_tree(tmp_path, {"set00/V000/I00001": {"annotations/set00/V000/I00001.txt": HEADER}})
    (root / "images/set00/V000/lwir/I00001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"set00/V000/lwir/I00001\.jpg"):
        register_tmp("kaist_tmp_missing", str(root), "mini", "original")


def test_unknown_annotation_version_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown KAIST annotation version 'clean'"):
        register_kaist("kaist_tmp_unknown", str(tmp_path), "mini", "clean")


def load_check_kaist():
    spec = importlib.util.spec_from_file_location("check_kaist", REPO / "datasets" / "check_kaist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imaged_tree(root: Path, keys, frame) -> Path:
    """``make_tree`` of ``keys``, each with one person, every image file holding ``frame``."""
    import cv2

    text = HEADER + bbgt_line("person", 100, 100, 40, 80)
    make_tree(root, {key: {f"annotations/{key}.txt": text} for key in keys})
    for path in (root / "images").rglob("*.jpg"):
        cv2.imwrite(str(path), frame)
    return root


def test_check_kaist_reports_a_tree(tmp_path, capsys):
    """datasets/check_kaist.py: counts what is there, exits nonzero on problems."""
    import cv2
    import numpy as np

    check_kaist = load_check_kaist()
    frame = np.zeros((512, 640, 3), np.uint8)
    root = imaged_tree(tmp_path, ["set00/V000/I00001", "set06/V000/I00002"], frame)
    assert check_kaist.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 frames in images/ (2 day, 0 night" in out and "original: 2 files" in out
    assert "mini.txt: 2 frames" in out and "original 2/2" in out

    cv2.imwrite(str(root / "images/set06/V000/lwir/I00002.jpg"), frame[:256])
    (root / "images/set00/V000/visible/I00001.jpg").unlink()
    write(root / "annotations/set00/V000/I00001.txt", HEADER + "person x 1 2 3 0 0 0 0 0 0 0\n")
    write(root / "annotations_paired/set00/V000/visible/I00001.txt", HEADER)
    assert check_kaist.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "set00/V000/visible/I00001.jpg" in out  # missing modality
    assert "set06/V000/lwir/I00002.jpg is 640x256" in out  # size mismatch
    assert "I00001.txt:2: non-numeric" in out  # malformed annotation
    assert "paired (annotations_paired/) lacks 1 of its 2 frames" in out  # partial version


def test_visualize_kaist_draws_both_frames(shared_data, tmp_path, capsys):
    """tools/visualize_kaist.py: visible | LWIR with GT and detections, from .pth or text."""
    import cv2
    import torch

    spec = importlib.util.spec_from_file_location("visualize_kaist", REPO / "tools" / "visualize_kaist.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    name = "kaist_fixture_vis"
    register_tmp(name, str(shared_data / "kaist-fixture"), "test-fixture", "original")
    box = [300.0, 100.0, 100.0, 200.0]  # on set06/V001/I00459 (image_id 0)
    torch.save(
        [{"image_id": 0, "instances": [{"image_id": 0, "category_id": 0, "bbox": box, "score": 0.9}]}],
        tmp_path / "instances_predictions.pth",
    )
    (tmp_path / "dets.txt").write_text("1,300,100,100,200,0.9\n1,10,10,50,50,0.2\n")

    def red_edge(image, x_offset):
        x, y, w, h = (int(v) for v in box)
        edge = image[y + h // 2, x + x_offset - 2 : x + x_offset + 3].astype(int)  # left edge, mid-height
        return ((edge[:, 2] > edge[:, 1] + 60) & (edge[:, 2] > edge[:, 0] + 60)).any()  # BGR: red

    drawn = {}
    for predictions in ("instances_predictions.pth", "dets.txt"):
        out = tmp_path / predictions.split(".")[0]
        assert (
            tool.main(
                [
                    "--dataset",
                    name,
                    "--predictions",
                    str(tmp_path / predictions),
                    "--frames",
                    "set06/V001/I00459",
                    "--output-dir",
                    str(out),
                    "--no-gt",
                ]
            )
            == 0
        )
        [path] = [str(p) for p in out.iterdir()]
        assert path.endswith("set06_V001_I00459.png")
        image = cv2.imread(path)
        assert image.shape == (512, 1280, 3)
        assert red_edge(image, 0) and red_edge(image, 640)  # the detection on both frames
        drawn[predictions] = image
    assert (drawn["instances_predictions.pth"] == drawn["dets.txt"]).all()  # 0.2 is under the threshold
    assert tool.main(["--dataset", name, "--frames", "set06/V001/I00459", "--output-dir", str(tmp_path / "gt")]) == 0
    gt = cv2.imread(str(tmp_path / "gt" / "set06_V001_I00459.png"))
    x, y, h = 282, 209, 111  # the first person of that frame (52 px wide): a green box on both frames
    for offset in (0, 640):
        edge = gt[y + h // 2, x + offset - 2 : x + offset + 3].astype(int)
        assert ((edge[:, 1] > edge[:, 2] + 40) & (edge[:, 1] > edge[:, 0] + 40)).any()
    capsys.readouterr()
    assert tool.main(["--dataset", name, "--frames", "set00/V000/I00000", "--output-dir", str(tmp_path / "x")]) == 2
    assert "set00/V000/I00000" in capsys.readouterr().err


def test_check_kaist_decodes_every_image_and_checks_every_box(tmp_path, capsys):
    """A truncated JPEG, zero-size and out-of-frame boxes and an empty annotation file are problems."""
    import numpy as np

    check_kaist = load_check_kaist()
    good = HEADER + bbgt_line("person", 100, 100, 40, 80)
    noise = np.random.default_rng(0).integers(0, 256, (512, 640, 3), dtype=np.uint8)
    root = imaged_tree(tmp_path, ["set00/V000/I00001", "set00/V000/I00002"], noise)
    assert check_kaist.main([str(root)]) == 0
    capsys.readouterr()

    truncated = root / "images/set00/V000/visible/I00002.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    write(
        root / "annotations/set00/V000/I00001.txt",
        good + bbgt_line("person", 10, 10, 0, 30) + bbgt_line("people", 700, 100, 20, 40),
    )
    write(root / "annotations/set00/V000/I00002.txt", "")
    assert check_kaist.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{truncated}: truncated JPEG (no End-Of-Image marker), 2000 bytes" in out
    assert "I00001.txt: object 2 (person) is 0 x 30" in out
    assert "I00001.txt: object 3 (people) at x 700, y 100, 20 x 40 lies wholly outside the 640x512 frame" in out
    assert "PROBLEM empty annotation file: 1" in out and "I00002.txt: 0 bytes" in out
