"""Training annotations: degenerate boxes skipped with a warning, broken ones named, and the
empty-image filter applied after the skip, through the trainer's own loader."""

import logging

import pytest
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.structures import BoxMode

from detpre.data.annotation_checks import AnnotationError, check_dataset_dicts
from detpre.data.build import train_dataset_dicts


def record(file_name, *boxes, mode=BoxMode.XYWH_ABS, width=100, height=80):
    return {
        "file_name": file_name,
        "image_id": file_name,
        "width": width,
        "height": height,
        "annotations": [{"bbox": list(b), "bbox_mode": mode, "category_id": 0, "iscrowd": 0} for b in boxes],
    }


def test_degenerate_and_outside_boxes_are_dropped_with_one_warning(caplog):
    dicts = [
        record("a.jpg", (10, 10, 20, 20), (5, 5, 0, 10), (30, 30, 10, -1)),  # zero width, negative height
        record("b.jpg", (120, 10, 10, 10), (-30, 10, 20, 20), (90, 70, 20, 20)),  # two outside, one partly in
        record("c.jpg", (1, 1, 5, 5)),
        {"file_name": "d.jpg", "image_id": "d", "width": 100, "height": 80},  # no annotations: untouched
    ]
    with caplog.at_level(logging.WARNING, logger="detpre.data.annotation_checks"):
        out = check_dataset_dicts(dicts, ["toy"])
    assert [len(r.get("annotations", [])) for r in out] == [1, 1, 1, 0]
    assert out[0]["annotations"][0]["bbox"] == [10, 10, 20, 20]
    assert out[1]["annotations"][0]["bbox"] == [90, 70, 20, 20]
    assert out[2] is dicts[2] and len(dicts[0]["annotations"]) == 3  # inputs are not modified
    [message] = [r.getMessage() for r in caplog.records]
    assert "Skipped 4 boxes" in message and "2 images of toy" in message and "a.jpg, b.jpg" in message


def test_xyxy_boxes_are_checked_in_their_mode():
    [r] = check_dataset_dicts([record("a.jpg", (10, 10, 30, 40), (30, 30, 30, 50), mode=BoxMode.XYXY_ABS)], ["toy"])
    assert [a["bbox"] for a in r["annotations"]] == [[10, 10, 30, 40]]


@pytest.mark.parametrize(
    "annotation,match",
    [
        ({"bbox": [1, 2, float("nan"), 4], "bbox_mode": BoxMode.XYWH_ABS}, "4 finite numbers"),
        ({"bbox": [1, 2, 3], "bbox_mode": BoxMode.XYWH_ABS}, "4 finite numbers"),
        ({"bbox": ["a", 2, 3, 4], "bbox_mode": BoxMode.XYWH_ABS}, "must be 4 numbers"),
        ({"bbox": [1, 2, 3, 4]}, "needs 'bbox' and 'bbox_mode'"),
        ({"bbox": [1, 2, 3, 4], "bbox_mode": 42}, "bbox_mode 42"),
    ],
)
def test_broken_annotations_name_the_image(annotation, match):
    dicts = [
        record("ok.jpg", (1, 1, 5, 5)),
        {"file_name": "img/broken.jpg", "image_id": 7, "annotations": [annotation]},
    ]
    with pytest.raises(AnnotationError, match=match) as info:
        check_dataset_dicts(dicts, ["toy"])
    assert "img/broken.jpg (image_id 7), annotation 0" in str(info.value)


@pytest.fixture
def toy_dataset():
    name = "detpre_test_annotation_checks"
    dicts = [
        record("good.jpg", (10, 10, 20, 20)),
        record("degenerate_only.jpg", (10, 10, 0, 20)),
        record("crowd_only.jpg", (10, 10, 20, 20)),
    ]
    dicts[2]["annotations"][0]["iscrowd"] = 1
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(thing_classes=["thing"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "filter_empty,expected", [(True, ["good.jpg"]), (False, ["good.jpg", "degenerate_only.jpg", "crowd_only.jpg"])]
)
def test_trainer_dicts_filter_empty_images_after_the_skip(cfg, toy_dataset, filter_empty, expected):
    cfg.DATASETS.TRAIN = (toy_dataset,)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = filter_empty
    assert [d["file_name"] for d in train_dataset_dicts(cfg)] == expected


@pytest.mark.parametrize("content", [None, b"\xff\xd8 not a jpeg"], ids=["missing", "corrupt"])
def test_unreadable_training_image_is_named(cfg, tmp_path, content):
    """The trainer's mapper for plain datasets (Detectron2's) names a missing or corrupt image."""
    from detpre.engine.trainer import DetpreTrainer

    path = tmp_path / "images" / "frame.jpg"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content)
    mapper = DetpreTrainer.build_mapper(cfg, True) or DatasetMapper(cfg, True)
    with pytest.raises(Exception, match="frame.jpg"):
        mapper(record(str(path), (1, 1, 5, 5)))
