"""Deterministic, nested dataset subsets registered by name, counted in trainable images."""

import json
import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

import detpre  # noqa: F401
from detpre.data.build import train_dataset_dicts
from detpre.data.datasets.subsets import (
    SubsetSpec,
    ensure_subset_registered,
    register_subset,
    subset_order,
)

from conftest import load_tool


def box(x, y, w, h, crowd=0):
    return {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": crowd}


def toy_annotations(i):
    """Every 7th image has no box, every 11th only a crowd box, every 13th only a box of zero
    width, every 17th only one outside the image: none of those is trained on."""
    if i % 7 == 0:
        return []
    if i % 11 == 0:
        return [box(1, 1, 5, 5, crowd=1)]
    if i % 13 == 0:
        return [box(1, 1, 0, 5)]
    if i % 17 == 0:
        return [box(50, 50, 5, 5)]
    return [box(1, 1, 5, 5), box(2, 2, 3, 3, crowd=1)]


def trainable_by_rule(i):
    return not (i % 7 == 0 or i % 11 == 0 or i % 13 == 0 or i % 17 == 0)


@pytest.fixture
def source():
    """A registered dataset of 200 images of 40x40 with COCO-style ids 1000..1199."""
    name = f"toy_{uuid.uuid4().hex[:8]}"
    records = [
        {"file_name": f"{i}.jpg", "image_id": 1000 + i, "height": 40, "width": 40, "annotations": toy_annotations(i)}
        for i in range(200)
    ]
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=["a"], evaluator_type="coco", json_file="full.json")
    yield name
    for n in [n for n in DatasetCatalog.list() if n.startswith(name)]:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


TRAINABLE = {1000 + i for i in range(200) if trainable_by_rule(i)}  # 134 of the 200 images


def ids(name):
    return [r["image_id"] for r in DatasetCatalog.get(name)]


def test_subset_by_count_and_name(source):
    assert ensure_subset_registered(f"{source}_50_s0")
    subset = ids(f"{source}_50_s0")
    assert len(subset) == 50 and len(set(subset)) == 50
    assert subset == sorted(subset)  # the source's order is kept
    assert set(subset) <= TRAINABLE and MetadataCatalog.get(f"{source}_50_s0").subset_counts == "trainable images"


def test_the_training_loader_trains_on_as_many_images_as_the_name_says(source, cfg):
    """The loader's own filtering (degenerate boxes dropped, then images without a non-crowd
    box) keeps every image of the subset: a 50-image subset trains on 50 images."""
    assert len(TRAINABLE) == 134  # of 200: the filtering matters on this source
    for name in (f"{source}_50_s0", f"{source}_134_s2"):
        ensure_subset_registered(name)
        cfg.DATASETS.TRAIN = (name,)
        assert {d["image_id"] for d in train_dataset_dicts(cfg)} == set(ids(name))
    # Drawn over every image, the same size would lose the untrainable ones to the loader.
    ensure_subset_registered(f"{source}_50_unfiltered_s0")
    cfg.DATASETS.TRAIN = (f"{source}_50_unfiltered_s0",)
    assert len(train_dataset_dicts(cfg)) < 50 == len(ids(f"{source}_50_unfiltered_s0"))


def test_nested_and_seeded(source):
    small, big = ids(register_subset(source, 20, 3)), ids(register_subset(source, 100, 3))
    assert set(small) <= set(big)
    other_seed = ids(register_subset(source, 20, 4))
    assert set(other_seed) != set(small)
    # Unfiltered subsets are nested too, and hold the trainable ones' first images: the
    # trainable images of the first 60 of the order are the first of the 50-image subset.
    unfiltered = ids(register_subset(source, 60, 3, unfiltered=True))
    assert set(unfiltered) <= set(ids(register_subset(source, 150, 3, unfiltered=True)))
    kept = [i for i in unfiltered if i in TRAINABLE]
    assert 0 < len(kept) < 50 and set(kept) == set(ids(register_subset(source, len(kept), 3)))
    assert set(kept) <= set(small + big)


def test_fraction_is_of_the_trainable_images(source):
    name = register_subset(source, "10pct", 0)
    assert name == f"{source}_10pct_s0"
    assert len(ids(name)) == 13  # 10% of 134
    assert set(ids(name)) <= set(ids(register_subset(source, "50pct", 0)))
    assert len(ids(register_subset(source, "10pct", 0, unfiltered=True))) == 20


def test_same_images_on_every_machine():
    """The order is a SHA-256 of "seed:image_id": pinned here so that a change of the rule
    (which would silently change every subset of every study) fails this test."""
    order = subset_order([str(i) for i in range(10)], seed=0)
    assert order == ["7", "4", "9", "3", "8", "2", "6", "0", "5", "1"]


def test_metadata_is_inherited_but_not_the_source_json(source):
    name = register_subset(source, 10, 0)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["a"] and meta.evaluator_type == "coco"
    assert meta.get("json_file", None) is None
    assert meta.subset_of == source


def test_subset_bigger_than_source_is_a_clear_error(source):
    ensure_subset_registered(f"{source}_135_s0")
    message = rf"135 trainable images.*only 134 \(200 in all; '{source}_135_unfiltered_s0' counts every image\)"
    with pytest.raises(ValueError, match=message):
        DatasetCatalog.get(f"{source}_135_s0")
    assert ensure_subset_registered(f"{source}_135_unfiltered_s0") and len(ids(f"{source}_135_unfiltered_s0")) == 135
    ensure_subset_registered(f"{source}_1k_unfiltered_s0")
    with pytest.raises(ValueError, match=r"1000 images.*only 200\.$"):
        DatasetCatalog.get(f"{source}_1k_unfiltered_s0")


@pytest.mark.parametrize("size", ["0", "-5", "abc", "0pct", "150pct", "1.5"])
def test_bad_sizes(size):
    with pytest.raises(ValueError, match="Invalid subset size"):
        SubsetSpec.parse(size, "coco", 0)


def test_names():
    assert SubsetSpec.parse("3.5k", "coco_2017_train", 0).name == "coco_2017_train_3.5k_s0"
    assert SubsetSpec.parse("35k", "coco_2017_train", 0, unfiltered=True).name == "coco_2017_train_35k_unfiltered_s0"
    assert SubsetSpec.parse(10000, "coco_2017_train", 1).name == "coco_2017_train_10k_s1"
    assert SubsetSpec.parse("1pct", "coco_2017_train", 0).name == "coco_2017_train_1pct_s0"


def test_unknown_source_is_not_registered():
    assert not ensure_subset_registered("no_such_dataset_10k_s0")


def test_paper_subsets_are_registered():
    for size in ("1k", "3.5k", "10k", "35k", "1pct", "20pct"):
        assert f"coco_2017_train_{size}_s0" in DatasetCatalog.list()


def test_make_subset_tool_filters_the_source_json(tmp_path):
    """tools/make_subset.py keeps every field of the source json for the chosen images."""
    main = load_tool("make_subset").main

    images = [{"id": i, "file_name": f"{i}.jpg", "height": 10, "width": 10} for i in range(30)]
    anns = [
        {
            "id": i,
            "image_id": i % 30,
            "bbox": [0, 0, 2, 2],
            "area": 4,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [[0, 0, 2, 0, 2, 2]],
        }
        for i in range(60)
    ]
    src = tmp_path / "src.json"
    src.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}], "info": {"x": 1}})
    )
    from detectron2.data.datasets import register_coco_instances

    name = f"toyjson_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(src), str(tmp_path))
    out = tmp_path / "out" / "sub.json"
    assert main(["--dataset", name, "--size", "12", "--seed", "0", "--output", str(out)]) == 0
    sub = json.loads(out.read_text())
    kept = {im["id"] for im in sub["images"]}
    assert len(kept) == 12 and kept == {r["image_id"] for r in DatasetCatalog.get(f"{name}_12_s0")}
    assert len(sub["annotations"]) == 24 and all(a["image_id"] in kept for a in sub["annotations"])
    assert sub["info"] == {"x": 1} and "segmentation" in sub["annotations"][0]
    assert main(["--dataset", name, "--size", "31", "--output", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
