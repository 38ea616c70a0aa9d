"""KAISTEvaluator: Detectron2 inputs/outputs in, the same numbers as tools/kaist_eval.py out."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from detpre.data.datasets.kaist import register_kaist
from detpre.evaluation import KAISTEvaluator
from detpre.evaluation.kaist_evaluation import DETECTIONS_FILE, RESULTS_FILE
from kaisteval import protocol
from kaisteval.protocol import SETTINGS, Setting

RESULT_KEYS = {s.name: s.key for s in SETTINGS}

from conftest import REPO  # noqa: E402


@pytest.fixture
def fixture_dataset(shared_data):
    root = shared_data / "kaist-fixture"
    if not root.is_dir():
        pytest.skip("kaist-fixture not found under the shared data")
    name = "kaist_fixture_evaluator_test"
    if name not in DatasetCatalog.list():
        register_kaist(name, str(root), "test-fixture", "original")
    yield name, root


def outputs_for(dicts, boxes_per_image, scores_per_image):
    inputs, outputs = [], []
    for d, boxes, scores in zip(dicts, boxes_per_image, scores_per_image):
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
        inst.scores = torch.tensor(np.asarray(scores, dtype=np.float32))
        inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
        inputs.append({"image_id": d["image_id"], "file_name": d["file_name"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def gt_xyxy(d):
    return [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]


def test_perfect_predictions_in_batches(fixture_dataset, tmp_path):
    name, _ = fixture_dataset
    dicts = DatasetCatalog.get(name)
    evaluator = KAISTEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    boxes = [gt_xyxy(d) for d in dicts]
    inputs, outputs = outputs_for(dicts, boxes, [np.ones(len(b)) for b in boxes])
    for i in range(0, len(inputs), 4):  # batches, out of order
        evaluator.process(inputs[i : i + 4][::-1], outputs[i : i + 4][::-1])
    results = evaluator.evaluate()["kaist"]
    assert list(results) == list(RESULT_KEYS.values())  # the CLI's names, in its order
    for key in ("MR_all", "MR_day", "MR_night"):
        assert results[key] < 1e-6, key
    lines = (tmp_path / DETECTIONS_FILE).read_text().splitlines()
    assert len(lines) == sum(map(len, boxes))
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["Reasonable-all"]["n_images"] == len(dicts)


def test_numbers_equal_the_cli_on_the_written_file(fixture_dataset, tmp_path):
    name, root = fixture_dataset
    dicts = DatasetCatalog.get(name)
    rng = np.random.default_rng(0)
    boxes, scores = [], []
    for d in dicts:
        gt = np.array(gt_xyxy(d)).reshape(-1, 4)
        jittered = gt + rng.normal(0, 4, gt.shape)
        x0, y0 = rng.uniform(0, 560, 3), rng.uniform(0, 400, 3)
        random = np.column_stack([x0, y0, x0 + 30, y0 + 75])
        boxes.append(np.concatenate([jittered, random]))
        scores.append(rng.uniform(0, 1, len(boxes[-1])))
    evaluator = KAISTEvaluator(name, output_dir=str(tmp_path), distributed=False)
    evaluator.reset()
    evaluator.process(*outputs_for(dicts, boxes, scores))
    results = evaluator.evaluate()["kaist"]
    assert 0 < results["MR_all"] < 100

    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "kaist_eval.py"),
            "--annotations",
            str(root / "annotations"),
            "--image-set",
            str(root / "imageSets" / "test-fixture.txt"),
            "--detections",
            str(tmp_path / DETECTIONS_FILE),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cli = json.loads(out.stdout)["settings"]
    for setting, key in RESULT_KEYS.items():
        expected = cli[setting]["MR"]
        assert (math.isnan(results[key]) and expected is None) or results[key] == expected, key


def test_no_predictions_and_bad_inputs(fixture_dataset):
    name, _ = fixture_dataset
    evaluator = KAISTEvaluator(name)
    evaluator.reset()
    assert evaluator.evaluate()["kaist"]["MR_all"] == pytest.approx(100.0)
    dicts = DatasetCatalog.get(name)
    inputs, outputs = outputs_for(dicts[:1], [[[1, 2, 3, 4]]], [[0.5]])
    inputs[0]["image_id"] = 10_000
    evaluator.process(inputs, outputs)
    with pytest.raises(KeyError, match="image_id 10000 is not in dataset"):
        evaluator.evaluate()


def test_dataset_dicts_without_frame_ids_are_rejected():
    name = "kaist_evaluator_test_no_frame_ids"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"image_id": 0, "file_name": "x.jpg", "annotations": []}])
        MetadataCatalog.get(name).set(evaluator_type="kaist", thing_classes=["person"])
    evaluator = KAISTEvaluator(name)
    evaluator.reset()
    with pytest.raises(KeyError, match=r"has no KAIST frame in \('set_id', 'video_id', 'frame_id'\)"):
        evaluator.evaluate()


def test_a_new_kaist_setting_reaches_the_results_with_no_other_edit(fixture_dataset, monkeypatch):
    """A setting added to kaisteval.protocol.SETTINGS is evaluated and reported by the evaluator
    (and so lands in metrics.json as kaist/<key>)."""
    name, _ = fixture_dataset
    tall = Setting("Reasonable-tall", "MR_tall", "all", (80.0, float("inf")), ("none", "partial"))
    monkeypatch.setattr(protocol, "SETTINGS", SETTINGS + (tall,))
    dicts = DatasetCatalog.get(name)
    evaluator = KAISTEvaluator(name)
    evaluator.reset()
    boxes = [gt_xyxy(d) for d in dicts]
    evaluator.process(*outputs_for(dicts, boxes, [np.ones(len(b)) for b in boxes]))
    results = evaluator.evaluate()["kaist"]
    assert list(results)[-1] == "MR_tall" and results["MR_tall"] < 1e-6
