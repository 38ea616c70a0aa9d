"""The synthetic demo dataset: deterministic, COCO-valid, lazily and safely generated."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from detpre.data.datasets.demo import (
    DEMO_CLASSES,
    MANIFEST,
    DemoSpec,
    demo_root,
    draw_demo_image,
    ensure_demo_dataset,
    generate_demo_dataset,
    register_demo,
)

SMALL = DemoSpec(seed=0, splits={"train": 6, "val": 3})


def files(root: Path):
    """Every file under ``root``, relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    generate_demo_dataset(str(tmp_path / "a"), SMALL)
    generate_demo_dataset(str(tmp_path / "b"), SMALL)
    generate_demo_dataset(str(tmp_path / "c"), DemoSpec(seed=1, splits=SMALL.splits))
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 6 + 3 + 2 + 1  # images, two json files, manifest
    assert a == b
    assert a.keys() == c.keys()
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]
    assert a["train/000000.png"] != c["train/000000.png"]


def test_an_image_depends_only_on_seed_split_and_index():
    image, anns = draw_demo_image(SMALL, 0, 3)
    again, anns_again = draw_demo_image(DemoSpec(seed=0, splits={"train": 500}), 0, 3)
    assert np.array_equal(image, again) and anns == anns_again
    other, _ = draw_demo_image(SMALL, 1, 3)
    assert not np.array_equal(image[: other.shape[0], : other.shape[1]], other[: image.shape[0], : image.shape[1]])


def test_annotations_are_valid_coco_with_masks(tmp_path):
    from pycocotools.coco import COCO

    generate_demo_dataset(str(tmp_path), SMALL)
    path = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["categories"]] == list(DEMO_CLASSES)
    assert len(data["images"]) == 6 and len(data["annotations"]) >= 6
    coco = COCO(str(path))
    lo, hi = SMALL.object_size
    for ann in data["annotations"]:
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= len(DEMO_CLASSES)
        assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
        assert 0.7 * lo <= max(w, h) <= hi + 0.01  # a triangle spans >= 0.75 of its circle
        poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        assert len(poly) >= 3
        # The box is the polygon's extent, and the area is the polygon's area.
        assert np.allclose(poly.min(0), [x, y], atol=0.02) and np.allclose(poly.max(0), [x + w, y + h], atol=0.02)
        assert 0 < ann["area"] <= w * h
        assert abs(coco.annToMask(ann).sum() - ann["area"]) <= 0.15 * ann["area"] + 8


def test_objects_are_drawn_where_annotated(tmp_path):
    """The pixels inside a mask are the object's colour, not the grey-ish background."""
    import cv2

    image, anns = draw_demo_image(SMALL, 0, 0)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    background = np.ones(image.shape[:2], bool)
    for ann in anns:
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(ann["segmentation"][0]).reshape(-1, 2)).astype(np.int32)], 1)
        eroded = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
        background &= ~mask.astype(bool)
        assert hsv[..., 1][eroded].mean() >= 150
    assert hsv[..., 1][background].mean() < 80


def test_registration_writes_nothing_until_get(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    names = register_demo("test_demo_lazy", str(root), SMALL)
    assert names == ["test_demo_lazy_train", "test_demo_lazy_val"]
    meta = MetadataCatalog.get("test_demo_lazy_val")
    assert meta.evaluator_type == "coco"
    assert meta.json_file == str(root / "annotations" / "instances_val.json")
    assert meta.thing_classes == list(DEMO_CLASSES)
    assert not root.exists()

    dicts = DatasetCatalog.get("test_demo_lazy_val")
    assert (root / MANIFEST).is_file() and (root / "annotations" / "instances_train.json").is_file()
    assert len(dicts) == 3
    record = dicts[0]
    assert os.path.isfile(record["file_name"]) and (record["height"], record["width"]) == (128, 128)
    assert all(a["segmentation"] and a["category_id"] in range(len(DEMO_CLASSES)) for a in record["annotations"])
    assert len(DatasetCatalog.get("test_demo_lazy_train")) == 6


def test_detectron2_mapper_reads_boxes_and_masks(tmp_path):
    from detectron2.data import DatasetMapper

    register_demo("test_demo_mapper", str(tmp_path), SMALL)
    record = DatasetCatalog.get("test_demo_mapper_train")[0]
    mapper = DatasetMapper(
        is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True, instance_mask_format="bitmask"
    )
    out = mapper(record)
    inst = out["instances"]
    assert out["image"].shape == (3, 128, 128)
    assert len(inst) == len(record["annotations"])
    # Each bitmask lies inside its box.
    for box, mask in zip(inst.gt_boxes.tensor, inst.gt_masks.tensor):
        ys, xs = mask.nonzero(as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


def test_default_root_follows_detectron2_and_override(monkeypatch):
    monkeypatch.delenv("DETPRE_DEMO_ROOT", raising=False)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert demo_root() == os.path.join("datasets", "detpre_demo")
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data/d2")
    assert demo_root() == "/data/d2/detpre_demo"
    monkeypatch.setenv("DETPRE_DEMO_ROOT", "/elsewhere/demo")
    assert demo_root() == "/elsewhere/demo"


def test_the_registered_names_read_this_test_sessions_dataset(demo_root):
    """``detpre_demo_*``, used in-process by tools' ``main`` and trainers, name the session's
    dataset (conftest), never the checkout's ``datasets/``: a fresh clone draws no data in a test."""
    for split in ("train", "val"):
        metadata = MetadataCatalog.get(f"detpre_demo_{split}")
        assert Path(metadata.json_file) == demo_root / "annotations" / f"instances_{split}.json"
        assert Path(metadata.image_root) == demo_root / split
    assert len(DatasetCatalog.get("detpre_demo_val")) == 100


def test_stale_or_partial_dataset_is_regenerated(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_dataset(str(root), SMALL)
    expected = files(root)

    # Another seed on disk: replaced, and nothing of it remains.
    manifest = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).write_text(json.dumps({**manifest, "seed": 5}))
    (root / "stray.txt").write_text("from the old dataset")
    ensure_demo_dataset(str(root), SMALL)
    assert files(root) == expected

    # Interrupted copy: images but no manifest.
    (root / MANIFEST).unlink()
    ensure_demo_dataset(str(root), SMALL)
    assert files(root) == expected

    # A current dataset is left alone.
    mtime = (root / MANIFEST).stat().st_mtime_ns
    ensure_demo_dataset(str(root), SMALL)
    assert (root / MANIFEST).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def _ensure(root: str) -> None:
    ensure_demo_dataset(root, SMALL)


def test_concurrent_generation_is_safe_and_done_once(tmp_path, monkeypatch):
    from detpre.data.datasets import demo

    log = tmp_path / "generations.log"
    original = demo.generate_demo_dataset

    def slow_generate(root, spec):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # widen the window in which the others arrive
        original(root, spec)

    monkeypatch.setattr(demo, "generate_demo_dataset", slow_generate)
    root = tmp_path / "data" / "demo"
    context = multiprocessing.get_context("fork")  # children inherit the patched function
    procs = [context.Process(target=_ensure, args=(str(root),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1
    reference = tmp_path / "reference"
    original(str(reference), SMALL)
    assert files(root) == files(reference)
    # No temporary, stale or lock files are left beside the root.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["demo"]
