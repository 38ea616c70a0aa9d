"""Proposals: SoCo's selective search reproduced, AlignDet's filter, both file formats,
byte-identical files for any worker count and sharding, the resumable tool, KAIST coverage."""

import hashlib
import json
import pickle
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

import detpre.data.proposals.compute as compute
from detpre.data.build import train_dataset_dicts
from detpre.data.proposals import (
    FILTER_PRESETS,
    PROPOSAL_GENERATORS,
    ProposalFilter,
    SearchSettings,
    compute_proposals,
    filter_preset,
    generate,
    load_proposals_into_dicts,
    merge_ranked,
    proposal_coverage,
    rank_logits,
    read_coco_proposals,
    register_filter_preset,
)
from detpre.data.proposals.journal import parse_shard, shard_block, shard_path
from detpre.data.proposals.selective_search import soco_selective_search

from conftest import load_tool

tool = load_tool("precompute_proposals")


# --------------------------------------------------------------------------- the filter
def test_aligndet_preset_is_socos_ratio3size0008_at_nms_05():
    preset = filter_preset("coco_aligndet")
    assert preset == ProposalFilter(32.0, 3.0, 0.0, 0.8, 0.5, None)
    assert FILTER_PRESETS["detpre_v1"] == ProposalFilter(0.0, 3.0, 0.02, 0.8, 0.5, 100)
    with pytest.raises(KeyError, match="coco_aligndet"):
        filter_preset("kaist_pedestrians")
    with pytest.raises(ValueError, match="already registered"):
        register_filter_preset("coco_aligndet", ProposalFilter())


def test_filter_applies_socos_rules_then_nms_in_order():
    boxes = np.array(
        [
            [10, 10, 50, 50],  # kept (first)
            [12, 12, 52, 52],  # IoU ~0.82 with the first: suppressed
            [5, 60, 50, 91],  # 31 px high: under 32 px
            [0, 0, 97, 32],  # w / h = 3.03 > 3
            [0, 0, 96, 32],  # w / h = 3 exactly: kept
            [0, 0, 90, 90],  # sqrt(8100 / 10000) = 0.9 > 0.8
            [60, 10, 92, 74],  # kept
            [10, 60, 42, 92],  # kept
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(ProposalFilter()(boxes, (100, 100)), boxes[[0, 4, 6, 7]])
    np.testing.assert_array_equal(ProposalFilter(top_k=2)(boxes, (100, 100)), boxes[[0, 4]])
    # A looser NMS keeps the near-duplicate, in order; no pixel rule keeps the low box.
    kept = ProposalFilter(min_side=0, nms_threshold=0.9)(boxes, (100, 100))
    np.testing.assert_array_equal(kept, boxes[[0, 1, 2, 4, 6, 7]])
    # nms_threshold 1.0 disables NMS.
    assert len(ProposalFilter(nms_threshold=1.0)(boxes, (100, 100))) == 5


def test_filter_handles_empty_and_degenerate_boxes():
    assert ProposalFilter()(np.zeros((0, 4)), (10, 10)).shape == (0, 4)
    degenerate = np.array([[5, 5, 5, 9], [3, 3, 1, 1]], dtype=np.float32)
    assert len(ProposalFilter(min_side=0)(degenerate, (10, 10))) == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_aspect_ratio": 0.5}, "max_aspect_ratio"),
        ({"top_k": 0}, "top_k"),
        ({"nms_threshold": 0}, "nms_threshold"),
        ({"min_relative_size": 0.9}, "min_relative_size"),
        ({"min_side": -1}, "min_side"),
    ],
)
def test_filter_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ProposalFilter(**kwargs)


def test_merge_ranked_interleaves_by_position():
    a = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], dtype=np.float32)
    b = np.array([[10, 10, 11, 11]], dtype=np.float32)
    np.testing.assert_array_equal(merge_ranked([a, b]), np.stack([a[0], b[0], a[1], a[2]]))
    assert merge_ranked([np.zeros((0, 4)), np.zeros((0, 4))]).shape == (0, 4)


def test_rank_logits_sort_in_order():
    assert list(np.argsort(-rank_logits(5), kind="stable")) == [0, 1, 2, 3, 4]


def test_coverage_counts_ground_truth_with_a_proposal_at_iou():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 4, 4]])]
    # Image 0: IoU 1 with the first, 50/150 = 0.33 with the second; image 1: no proposal.
    props = [np.array([[0, 0, 10, 10], [20, 25, 30, 35]]), np.zeros((0, 4))]
    assert proposal_coverage(props, gt, 0.5) == {"covered": 1, "total": 3}
    assert proposal_coverage(props, gt, 0.3) == {"covered": 2, "total": 3}
    with pytest.raises(ValueError, match="proposal lists"):
        proposal_coverage(props[:1], gt)


# --------------------------------------------------------------------------- generators
def _noise_image() -> np.ndarray:
    """Smooth random colour noise, 240 x 320 RGB: some 80 selective-search regions."""
    noise = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return cv2.resize(noise, (320, 240), interpolation=cv2.INTER_LINEAR)


def test_soco_search_reproduces_socos_code_box_for_box():
    """Reference: SoCo's selective_search/selective_search.py (hologerry/SoCo@2be1229a),
    scale 300, sigma 0.9, min_size 100, on this image, with scikit-image 0.25.2; its rects
    (x, y, w, h) read as XYXY (x, y, x + w, y + h), in its order."""
    image = _noise_image()
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "17e9c4d61022afdf"  # the same input
    boxes = soco_selective_search(image).astype(np.int32)
    assert len(boxes) == 83
    assert boxes[:3].tolist() == [[0, 0, 319, 239], [20, 0, 30, 14], [58, 0, 74, 33]]
    assert boxes[-1].tolist() == [0, 0, 319, 239]  # the last merge: the whole image, one pixel short
    assert hashlib.sha256(boxes.tobytes()).hexdigest() == (
        "9805fa0e2898a1129d6103b1c23978ec7bddc39b055c0aedd58492228217b11e"
    )
    with pytest.raises(ValueError, match="uint8"):
        soco_selective_search(image.astype(np.float32))


@pytest.mark.parametrize("name", sorted(PROPOSAL_GENERATORS))
def test_generators_are_deterministic_in_one_process(name):
    """OpenCV's own order is rand() x level: the same image gives another order every call."""
    image = np.ascontiguousarray(_noise_image()[:120, :160, ::-1])
    first, shape = generate(name, image)
    again, _ = generate(name, image.copy())
    assert shape == (120, 160) and len(first) > 0
    np.testing.assert_array_equal(first, again)
    if name.startswith("opencv"):
        area = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
        assert (np.diff(area) >= 0).all()  # the documented order: smallest first


def test_generate_searches_a_resized_copy_and_single_channel_frames():
    image = np.ascontiguousarray(_noise_image()[:, :, ::-1])
    boxes, shape = generate("soco", image, search_size=160)
    assert shape == (120, 160) and boxes[:, 2].max() <= 160
    assert len(generate("soco", image[:, :, 1])[0]) > 0  # a thermal frame, replicated to 3 channels
    with pytest.raises(KeyError, match="registered"):
        generate("edge_boxes", image)


# --------------------------------------------------------------------------- files and the tool
def _shapes_image(height=240, width=320):
    """Flat background with two saturated rectangles: selective search must find both."""
    image = np.full((height, width, 3), 200, np.uint8)
    cv2.rectangle(image, (40, 60), (139, 179), (0, 0, 255), -1)
    cv2.rectangle(image, (200, 30), (279, 109), (255, 0, 0), -1)
    return image, np.array([[40, 60, 140, 180], [200, 30, 280, 110]], dtype=np.float32)


@pytest.fixture
def toy_dataset(tmp_path):
    """A registered 4-image dataset with a visible and an 'lwir' frame and annotations."""
    name = f"toy_props_{uuid.uuid4().hex[:8]}"
    records = []
    for i in range(4):
        image, objects = _shapes_image()
        image = np.roll(image, 7 * i, axis=1)
        image[::9, ::11] = 60 + 40 * i  # a little texture
        objects = objects + np.array([7 * i, 0, 7 * i, 0], dtype=np.float32)
        visible, lwir = tmp_path / f"{i}_v.png", tmp_path / f"{i}_t.png"
        cv2.imwrite(str(visible), image)
        cv2.imwrite(str(lwir), 255 - image)
        records.append(
            {
                "file_name": str(visible),
                "lwir_file_name": str(lwir),
                "image_id": 100 + i,
                "height": 240,
                "width": 320,
                "annotations": [
                    {"bbox": list(map(float, o)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}
                    for o in objects
                ]
                + [{"bbox": [0.0, 0.0, 5.0, 5.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1}],
            }
        )
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    yield name, records
    DatasetCatalog.remove(name)


@pytest.mark.parametrize("modality, suffix", [("visible", "json"), ("both", "pkl")])
def test_tool_writes_either_format_and_both_load(toy_dataset, tmp_path, capsys, modality, suffix):
    name, records = toy_dataset
    output = str(tmp_path / f"props.{suffix}")
    argv = ["--dataset", name, "--output", output, "--modality", modality, "--workers", "1"]
    assert tool.main(argv) == 0
    assert not (tmp_path / f"props.{suffix}.partial").exists()
    dicts = load_proposals_into_dicts([dict(r) for r in records], output)
    direct = [
        compute.search_image(
            compute.image_files(r, SearchSettings(modality=modality)), SearchSettings(modality=modality)
        )
        for r in records
    ]
    for d, (boxes, shape) in zip(dicts, direct):
        assert shape == (240, 320) and len(boxes) > 0
        # Detectron2 re-sorts by logit: the order must survive, in either format.
        np.testing.assert_array_equal(d["proposal_boxes"], boxes)
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
        assert (np.diff(d["proposal_objectness_logits"]) < 0).all()
    out = capsys.readouterr().out
    # 8 objects; the crowd box is not ground truth.
    assert "recall@0.5: 8 of 8 annotated objects" in out and "recall@0.7:" in out
    if suffix == "json":
        content = json.load(open(output))
        assert content["categories"] == [{"id": 1, "name": "selective_search", "supercategory": "selective_search"}]
        ann = content["annotations"][0]
        x0, y0, x1, y1 = direct[0][0][0]
        assert ann["image_id"] == 100 and ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]  # COCO xywh
        assert content["info"]["proposals"]["generator"] == "soco"
    else:
        assert pickle.load(open(output, "rb"))["proposals"]["modality"] == "both"


def _alignet_json(path, image_ids=(100, 101, 102, 103)):
    """A file laid out as AlignDet's released train2017_ratio3size0008@0.5.json."""
    content = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": 240, "width": 320} for i in image_ids],
        "annotations": [
            {"id": 1, "image_id": 100, "category_id": 1, "bbox": [40, 60, 100, 120], "area": 12000, "iscrowd": 0},
            {"id": 2, "image_id": 100, "category_id": 1, "bbox": [200, 30, 80, 80], "area": 6400, "iscrowd": 0},
            {"id": 3, "image_id": 100, "category_id": 1, "bbox": [5, 5, 0.5, 30], "area": 15, "iscrowd": 0},
            {"id": 4, "image_id": 100, "category_id": 1, "bbox": [400, 5, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 5, "image_id": 100, "category_id": 1, "bbox": [1, 1, 40, 40], "area": 1600, "iscrowd": 1},
            {"id": 6, "image_id": 101, "category_id": 2, "bbox": [1, 1, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 7, "image_id": 102, "category_id": 1, "bbox": [10, 20, 33, 44], "area": 1452, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "selective_search"}, {"id": 2, "name": "something_else"}],
    }
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] in image_ids]
    path.write_text(json.dumps(content))
    return str(path)


def test_an_aligndet_proposal_json_loads_as_mmdet_reads_it(toy_dataset, tmp_path):
    name, records = toy_dataset
    path = _alignet_json(tmp_path / "train2017_ratio3size0008@0.5.json")
    by_id = read_coco_proposals(path)
    # xywh -> XYXY in file order; a box under 1 px, one outside the image, a crowd box and
    # another category are skipped, as mmdet's CocoDataset skips them.
    np.testing.assert_array_equal(by_id["100"]["boxes"], [[40, 60, 140, 180], [200, 30, 280, 110]])
    assert by_id["101"]["boxes"].shape == (0, 4) and by_id["103"]["boxes"].shape == (0, 4)
    dicts = load_proposals_into_dicts([dict(r) for r in records], path)
    np.testing.assert_array_equal(dicts[2]["proposal_boxes"], [[10, 20, 43, 64]])
    # Through the training config, as DATASETS.PROPOSAL_FILES_TRAIN.
    from detectron2.config import get_cfg

    from detpre import add_detpre_config

    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.LOAD_PROPOSALS = True
    cfg.DATASETS.PROPOSAL_FILES_TRAIN = (path,)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert cfg.DATALOADER.FILTER_EMPTY_PROPOSALS  # AlignDet's CocoDataset drops images without any
    assert [len(d["proposal_boxes"]) for d in train_dataset_dicts(cfg)] == [2, 1]
    cfg.DATALOADER.FILTER_EMPTY_PROPOSALS = False
    assert [len(d["proposal_boxes"]) for d in train_dataset_dicts(cfg)] == [2, 0, 1, 0]
    cfg.DATASETS.PROPOSAL_FILES_TRAIN = (path, path)
    with pytest.raises(ValueError, match="one proposal file per dataset"):
        train_dataset_dicts(cfg)


def test_a_proposal_json_of_another_dataset_is_named(toy_dataset, tmp_path):
    _, records = toy_dataset
    with pytest.raises(KeyError, match="no entry for 2 of the dataset's 4 images"):
        load_proposals_into_dicts([dict(r) for r in records], _alignet_json(tmp_path / "a.json", (100, 101)))
    other = json.loads(open(_alignet_json(tmp_path / "b.json")).read())
    other["categories"] = [{"id": 1, "name": "person"}]
    (tmp_path / "b.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="no 'selective_search' category"):
        load_proposals_into_dicts([dict(r) for r in records], str(tmp_path / "b.json"))
    with pytest.raises(FileNotFoundError, match="PROPOSAL_FILES_TRAIN"):
        load_proposals_into_dicts([dict(r) for r in records], str(tmp_path / "absent.json"))


@pytest.mark.slow
def test_files_are_identical_whatever_the_workers_and_shards(toy_dataset, tmp_path):
    """The same images and settings: the same bytes, with 1 or 2 (spawned) workers, sharded
    into 3 and merged, in either format."""
    name, records = toy_dataset
    dicts = DatasetCatalog.get(name)
    settings = SearchSettings(generator="opencv_fast")
    for suffix in ("json", "pkl"):
        one = compute_proposals(dicts, str(tmp_path / f"one.{suffix}"), settings, workers=1)
        two = compute_proposals(dicts, str(tmp_path / f"two.{suffix}"), settings, workers=2)
        assert open(one, "rb").read() == open(two, "rb").read()
    sharded = str(tmp_path / "sharded.json")
    for index in (2, 0, 1):  # any order, e.g. as array tasks finish
        argv = ["--dataset", name, "--output", sharded, "--generator", "opencv_fast", "--shard", f"{index}/3"]
        assert tool.main(argv + ["--workers", "1"]) == 0
    assert tool.main(["--dataset", name, "--output", sharded, "--generator", "opencv_fast", "--merge", "3"]) == 0
    assert open(sharded, "rb").read() == open(tmp_path / "one.json", "rb").read()


def test_shards_are_checked_when_merged(toy_dataset, tmp_path):
    name, records = toy_dataset
    dicts = DatasetCatalog.get(name)
    assert parse_shard("1/4") == (1, 4) and [len(shard_block(list(range(10)), i, 3)) for i in range(3)] == [3, 3, 4]
    with pytest.raises(ValueError, match="0 <= i < N"):
        parse_shard("4/4")
    output = str(tmp_path / "p.pkl")
    settings = SearchSettings(generator="opencv_fast")
    compute_proposals(dicts, output, settings, shard=(0, 2))
    with pytest.raises(FileNotFoundError, match="1 of 2 shard files are missing"):
        compute.merge_shards(dicts, output, settings, 2)
    compute_proposals(dicts, output, settings, shard=(1, 2))
    with pytest.raises(ValueError, match="other settings"):
        compute.merge_shards(dicts, output, SearchSettings(generator="opencv_fast", search_size=160), 2)
    with pytest.raises(ValueError, match="block 0/2"):
        compute.merge_shards(dicts[1:], output, settings, 2)
    compute.merge_shards(dicts, output, settings, 2)
    assert pickle.load(open(output, "rb"))["ids"] == [100, 101, 102, 103]
    assert pickle.load(open(shard_path(output, 1, 2), "rb"))["shard"] == [1, 2]


def test_tool_resumes_from_its_journal(toy_dataset, tmp_path, monkeypatch):
    name, records = toy_dataset
    output = str(tmp_path / "props.pkl")
    settings = SearchSettings(generator="opencv_fast")
    finished = np.array([[1, 2, 30, 40]], dtype=np.float32)
    with open(output + ".partial", "wb") as f:
        pickle.dump({"settings": settings.describe()}, f)
        pickle.dump((101, (finished, (240, 320))), f)
        f.write(b"\x80\x04\x95torn")  # a record cut by a kill
    searched = []
    real = compute.search_image
    monkeypatch.setattr(compute, "search_image", lambda files, s: searched.append(files["visible"]) or real(files, s))
    compute_proposals(DatasetCatalog.get(name), output, settings, workers=1)
    assert searched == [records[i]["file_name"] for i in (0, 2, 3)]
    np.testing.assert_array_equal(pickle.load(open(output, "rb"))["boxes"][1], finished)
    assert not (tmp_path / "props.pkl.partial").exists()


def test_tool_refuses_a_journal_of_other_settings(toy_dataset, tmp_path):
    name, _ = toy_dataset
    output = str(tmp_path / "props.pkl")
    with open(output + ".partial", "wb") as f:
        pickle.dump({"settings": {"modality": "lwir"}}, f)
    with pytest.raises(ValueError, match="other settings"):
        compute_proposals(DatasetCatalog.get(name), output, SearchSettings(), workers=1)


def test_tool_names_what_is_missing(toy_dataset, tmp_path, capsys):
    name, records = toy_dataset
    records[1].pop("lwir_file_name")
    assert tool.main(["--dataset", name, "--output", str(tmp_path / "p.pkl"), "--modality", "lwir"]) == 2
    assert "lwir_file_name" in capsys.readouterr().err
    records[1]["lwir_file_name"] = str(tmp_path / "absent.png")
    argv = ["--dataset", name, "--output", str(tmp_path / "p.pkl"), "--modality", "lwir", "--workers", "1"]
    assert tool.main(argv) == 2
    assert "absent.png" in capsys.readouterr().err


def test_tool_refuses_a_truncated_frame_by_name(toy_dataset, tmp_path, capsys):
    name, records = toy_dataset
    truncated = tmp_path / "cut.jpg"
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    truncated.write_bytes(data.tobytes()[:2000])
    records[2]["file_name"] = str(truncated)
    assert tool.main(["--dataset", name, "--output", str(tmp_path / "p.pkl"), "--workers", "1"]) == 2
    assert f"Cannot read image {truncated}: truncated JPEG (no End-Of-Image marker), 2000 bytes." in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_kaist_fixture_proposals_cover_persons(shared_data, tmp_path, capsys):
    """Real KAIST frames: thermal proposals must find pedestrians (recall printed, see README)."""
    from detpre.data.datasets.kaist import register_kaist

    name = f"kaist_fixture_{uuid.uuid4().hex[:8]}"
    register_kaist(name, str(shared_data / "kaist-fixture"), "test-fixture", "original")
    try:
        covered = {}
        for modality in ("visible", "lwir"):
            output = str(tmp_path / f"{modality}.pkl")
            argv = ["--dataset", name, "--output", output, "--modality", modality, "--workers", "1"]
            argv += ["--generator", "opencv_fast", "--preset", "detpre_v1", "--search-size", "320"]
            assert tool.main(argv) == 0
            line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("recall@0.5:")][0]
            print(modality, line)
            covered[modality] = int(line.split()[1])
            with open(output, "rb") as f:
                proposals = pickle.load(f)
            assert len(proposals["ids"]) == 9
            for boxes in proposals["boxes"]:
                assert (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 512).all()
        # Warm pedestrians stand out of the thermal frame (half the fixture is at night).
        assert covered["lwir"] > covered["visible"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
