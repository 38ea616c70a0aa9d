"""Selective-search proposals: AlignDet's filtering, the resumable tool, KAIST coverage."""

import pickle
import uuid
from dataclasses import asdict

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import load_proposals_into_dataset
from detectron2.structures import BoxMode

import detpre.data.proposal_files as proposal_files
from detpre.data.proposals import ProposalFilter, merge_ranked, proposal_coverage, rank_logits, selective_search

from conftest import load_tool

tool = load_tool("precompute_proposals")


def test_filter_applies_ratio_size_nms_and_top_k():
    boxes = np.array(
        [
            [10, 10, 50, 50],  # kept (rank 0)
            [12, 12, 52, 52],  # IoU ~0.82 with rank 0: suppressed
            [0, 0, 80, 20],  # aspect ratio 4: dropped
            [60, 60, 61, 61],  # sqrt(1 / 10000) = 0.01 < 0.02: dropped
            [0, 0, 95, 95],  # sqrt(0.9025) = 0.95 > 0.8: dropped
            [60, 10, 90, 70],  # ratio 2, kept (rank 1)
            [10, 60, 40, 90],  # kept (rank 2)
            [55, 55, 95, 95],  # kept (rank 3)
        ],
        dtype=np.float32,
    )
    kept = ProposalFilter()(boxes, (100, 100))
    np.testing.assert_array_equal(kept, boxes[[0, 5, 6, 7]])
    kept = ProposalFilter(top_k=2)(boxes, (100, 100))
    np.testing.assert_array_equal(kept, boxes[[0, 5]])
    # A looser NMS keeps the near-duplicate, in rank order.
    kept = ProposalFilter(nms_threshold=0.9, top_k=3)(boxes, (100, 100))
    np.testing.assert_array_equal(kept, boxes[[0, 1, 5]])


def test_filter_handles_empty_and_degenerate_boxes():
    assert ProposalFilter()(np.zeros((0, 4)), (10, 10)).shape == (0, 4)
    degenerate = np.array([[5, 5, 5, 9], [3, 3, 1, 1]], dtype=np.float32)
    assert len(ProposalFilter()(degenerate, (10, 10))) == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_aspect_ratio": 0.5}, "max_aspect_ratio"),
        ({"top_k": 0}, "top_k"),
        ({"nms_threshold": 0}, "nms_threshold"),
        ({"min_relative_size": 0.9}, "min_relative_size"),
    ],
)
def test_filter_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ProposalFilter(**kwargs)


def test_merge_ranked_interleaves_by_rank():
    a = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], dtype=np.float32)
    b = np.array([[10, 10, 11, 11]], dtype=np.float32)
    np.testing.assert_array_equal(merge_ranked([a, b]), np.stack([a[0], b[0], a[1], a[2]]))
    assert merge_ranked([np.zeros((0, 4)), np.zeros((0, 4))]).shape == (0, 4)


def test_rank_logits_sort_in_rank_order():
    logits = rank_logits(5)
    assert list(np.argsort(-logits, kind="stable")) == [0, 1, 2, 3, 4]


def test_coverage_counts_ground_truth_with_a_proposal_at_iou():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 4, 4]])]
    # Image 0: IoU 1 with the first, 50/150 = 0.33 with the second; image 1: no proposal.
    props = [np.array([[0, 0, 10, 10], [20, 25, 30, 35]]), np.zeros((0, 4))]
    assert proposal_coverage(props, gt, 0.5) == {"covered": 1, "total": 3}
    assert proposal_coverage(props, gt, 0.3) == {"covered": 2, "total": 3}
    with pytest.raises(ValueError, match="proposal lists"):
        proposal_coverage(props[:1], gt)


def _shapes_image(height=240, width=320):
    """Flat background with two saturated rectangles: selective search must find both."""
    image = np.full((height, width, 3), 200, np.uint8)
    cv2.rectangle(image, (40, 60), (139, 179), (0, 0, 255), -1)
    cv2.rectangle(image, (200, 30), (279, 109), (255, 0, 0), -1)
    return image, np.array([[40, 60, 140, 180], [200, 30, 280, 110]], dtype=np.float32)


@pytest.mark.parametrize("max_size", [320, 96])
def test_selective_search_boxes_are_in_original_pixels(max_size):
    image, objects = _shapes_image()
    boxes = selective_search(image, max_size=max_size)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 320).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 240).all()
    # Both rectangles are found, at their place in the full-size image.
    assert proposal_coverage([boxes], [objects], 0.7) == {"covered": 2, "total": 2}
    # A single-channel (thermal) frame works too.
    assert len(selective_search(image[:, :, 2], max_size=max_size)) > 0


@pytest.fixture
def toy_dataset(tmp_path):
    """A registered 3-image dataset with a visible and an 'lwir' frame and annotations."""
    name = f"toy_props_{uuid.uuid4().hex[:8]}"
    records = []
    for i in range(3):
        image, objects = _shapes_image()
        image = np.roll(image, 7 * i, axis=1)
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


@pytest.mark.parametrize(
    "modality, workers",
    [("visible", 1), ("both", 1), pytest.param("lwir", 2, marks=pytest.mark.slow)],  # 2: spawned workers
)
def test_tool_writes_a_detectron2_proposal_file(toy_dataset, tmp_path, capsys, modality, workers):
    name, records = toy_dataset
    output = str(tmp_path / "props.pkl")
    argv = [
        "--dataset",
        name,
        "--output",
        output,
        "--modality",
        modality,
        "--workers",
        str(workers),
        "--max-size",
        "160",
    ]
    assert tool.main(argv) == 0
    with open(output, "rb") as f:
        proposals = pickle.load(f)
    assert proposals["ids"] == [100, 101, 102]
    assert proposals["selective_search"]["modality"] == modality
    assert not (tmp_path / "props.pkl.partial").exists()
    dicts = load_proposals_into_dataset([dict(r) for r in records], output)
    for d, boxes in zip(dicts, proposals["boxes"]):
        assert 0 < len(boxes) <= 100
        # Detectron2 re-sorts by logit: the rank order must survive.
        np.testing.assert_array_equal(d["proposal_boxes"], boxes)
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
    out = capsys.readouterr().out
    # 6 objects; the crowd box is not ground truth.
    assert "coverage: 6 of 6 ground-truth boxes" in out


def test_tool_resumes_from_its_journal(toy_dataset, tmp_path, monkeypatch):
    name, records = toy_dataset
    output = str(tmp_path / "props.pkl")
    settings = proposal_files.SearchSettings(max_size=160)
    journal = output + ".partial"
    finished = np.array([[1, 2, 30, 40]], dtype=np.float32)
    with open(journal, "wb") as f:
        pickle.dump({"settings": asdict(settings)}, f)
        pickle.dump((101, finished), f)
        f.write(b"\x80\x04\x95torn")  # a record cut by a kill
    searched = []
    real = proposal_files.search_image
    monkeypatch.setattr(proposal_files, "search_image", lambda files, s: searched.append(files[0]) or real(files, s))
    proposals = proposal_files.compute_proposals(DatasetCatalog.get(name), output, settings, workers=1)
    assert searched == [records[0]["file_name"], records[2]["file_name"]]
    np.testing.assert_array_equal(proposals["boxes"][1], finished)
    assert not (tmp_path / "props.pkl.partial").exists()


def test_tool_refuses_a_journal_of_other_settings(toy_dataset, tmp_path):
    name, _ = toy_dataset
    output = str(tmp_path / "props.pkl")
    with open(output + ".partial", "wb") as f:
        pickle.dump({"settings": {"modality": "lwir"}}, f)
    with pytest.raises(ValueError, match="other settings"):
        proposal_files.compute_proposals(DatasetCatalog.get(name), output, proposal_files.SearchSettings(), workers=1)


def test_tool_names_what_is_missing(toy_dataset, tmp_path, capsys):
    name, records = toy_dataset
    records[1].pop("lwir_file_name")
    assert tool.main(["--dataset", name, "--output", str(tmp_path / "p.pkl"), "--modality", "lwir"]) == 2
    assert "lwir_file_name" in capsys.readouterr().err
    records[1]["lwir_file_name"] = str(tmp_path / "absent.png")
    assert (
        tool.main(["--dataset", name, "--output", str(tmp_path / "p.pkl"), "--modality", "lwir", "--workers", "1"]) == 2
    )
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
    """Real KAIST frames: thermal proposals must find pedestrians (coverage printed, see README)."""
    from detpre.data.datasets.kaist import register_kaist

    name = f"kaist_fixture_{uuid.uuid4().hex[:8]}"
    register_kaist(name, str(shared_data / "kaist-fixture"), "test-fixture", "original")
    try:
        covered = {}
        for modality in ("visible", "lwir"):
            output = str(tmp_path / f"{modality}.pkl")
            argv = [
                "--dataset",
                name,
                "--output",
                output,
                "--modality",
                modality,
                "--workers",
                "1",
                "--max-size",
                "320",
            ]
            assert tool.main(argv) == 0
            line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("coverage:")][0]
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
