"""AP at IoU 0.1..0.9 on a hand-built case where every value is known in advance.

Each image has one 100x100 ground-truth box and one detection inside it, ``w`` pixels wide
and 100 tall, so its IoU is exactly w / 100 (also under VOC's +1 pixel convention, with
integer boxes). Scores rise with IoU, so at threshold t the first n_t detections (those
with IoU above t) are true positives and the rest false positives: precision is 1 up to
recall R = n_t / N and the curve ends there. Then
  COCO 101-point AP = #{r in {0, .01, ..., 1} : r <= R} / 101,
  VOC area AP       = R,
  VOC07 11-point AP = #{r in {0, .1, ..., 1} : r <= R} / 11.
"""

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from detpre.evaluation import COCOIoUSweepEvaluator, PascalVOCIoUSweepEvaluator
from detpre.evaluation.iou_sweep import (
    COCO_IOUS,
    IOU_SWEEP,
    VOCDetections,
    VOCGroundTruth,
    coco_iou_sweep,
    coco_voc_iou_sweep,
    voc_iou_sweep,
)

from conftest import load_tool

ap_vs_iou_main = load_tool("ap_vs_iou").main

# class name -> (COCO category id, widths of its detections = IoU x 100); ids are not contiguous
DESIGN = {"car": (3, [35, 57, 78, 96]), "dog": (7, [25, 66])}
THRESHOLDS = np.array(IOU_SWEEP)


def recall_at(widths, t):
    return sum(w / 100 > t for w in widths) / len(widths)


def coco_ap(recall):
    return 100 * np.mean(np.linspace(0, 1, 101) <= recall + 1e-12) if recall > 0 else 0.0


def voc07_ap(recall):
    return 100 * np.mean(np.arange(0, 1.1, 0.1) <= recall + 1e-12) if recall > 0 else 0.0


def expected(ap_fn, widths):
    return np.array([ap_fn(recall_at(widths, t)) for t in THRESHOLDS])


def expected_overall(ap_fn):
    return np.mean([expected(ap_fn, w) for _, w in DESIGN.values()], axis=0)


def build_design():
    """COCO gt dict and results list; plus an image with no object and a low-score false positive."""
    images, annotations, results = [], [], []
    image_id = 0
    for cat, widths in DESIGN.values():
        for w in widths:
            image_id += 1
            images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 120, "width": 120})
            annotations.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [0, 0, 100, 100],
                    "area": 10000,
                    "iscrowd": 0,
                }
            )
            results.append({"image_id": image_id, "category_id": cat, "bbox": [0, 0, w, 100], "score": 0.5 + w / 200})
    images.append({"id": image_id + 1, "file_name": "empty.jpg", "height": 120, "width": 120})
    results.append({"image_id": image_id + 1, "category_id": DESIGN["dog"][0], "bbox": [5, 5, 50, 50], "score": 0.1})
    categories = [{"id": cat, "name": name} for name, (cat, _) in DESIGN.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, results


@pytest.fixture
def coco_files(tmp_path):
    gt, results = build_design()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, results


def load_coco(path):
    return COCO(str(path))


@pytest.mark.parametrize("fast", [True, False])
def test_coco_ap_at_each_iou_is_the_designed_staircase(coco_files, fast):
    gt_path, _, results = coco_files
    sweep = coco_iou_sweep(load_coco(gt_path), results, use_fast_impl=fast)
    for name, (_, widths) in DESIGN.items():
        np.testing.assert_allclose(sweep.per_class[name], expected(coco_ap, widths), atol=1e-6)
    np.testing.assert_allclose(sweep.ap, expected_overall(coco_ap), atol=1e-6)
    # The staircase itself: car falls at 0.4, 0.6 and 0.8 (IoUs .35, .57, .78, .96).
    car = sweep.per_class["car"]
    assert car[0] == car[1] == car[2] == pytest.approx(100) and car[2] > car[3] == car[4] > car[5]
    # AP@[.5:.95] is the mean over COCO's ten thresholds.
    per_class_coco = [np.mean([coco_ap(recall_at(w, t)) for t in COCO_IOUS]) for _, w in DESIGN.values()]
    assert sweep.ap_coco == pytest.approx(np.mean(per_class_coco))
    assert sweep.at(0.5) == pytest.approx(expected_overall(coco_ap)[4])


def registered_predictions(coco_files, tmp_path):
    """The design registered as a COCO dataset, and its results as model inputs / outputs."""
    gt_path, _, results = coco_files
    name = f"iou_sweep_coco_{tmp_path.name}"
    register_coco_instances(name, {}, str(gt_path), str(tmp_path))
    DatasetCatalog.get(name)  # sets thing_dataset_id_to_contiguous_id, as training does
    contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    inputs, outputs = [], []
    for image in json.loads(gt_path.read_text())["images"]:
        dets = [r for r in results if r["image_id"] == image["id"]]
        inst = Instances((120, 120))
        inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]))
        inst.scores = torch.tensor([d["score"] for d in dets])
        inst.pred_classes = torch.tensor([contiguous[d["category_id"]] for d in dets])
        inputs.append({"image_id": image["id"]})
        outputs.append({"instances": inst})
    return name, inputs, outputs


@pytest.mark.parametrize("sweep", [False, True])
def test_trainer_evaluates_the_sweep_when_configured(coco_files, tmp_path, cfg, sweep):
    """TEST.IOU_SWEEP adds the sweep beside COCO's metrics in train_net.py's evaluation."""
    from detpre.engine.trainer import DetpreTrainer

    name, inputs, outputs = registered_predictions(coco_files, tmp_path)
    cfg.TEST.IOU_SWEEP = sweep
    evaluator = DetpreTrainer.build_evaluator(cfg, name, str(tmp_path / "inference"))
    evaluator.reset()
    evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    assert set(results) == ({"bbox", "bbox_iou"} if sweep else {"bbox"})
    if sweep:
        np.testing.assert_allclose(
            [results["bbox_iou"][f"AP{round(t * 100)}"] for t in IOU_SWEEP], expected_overall(coco_ap), atol=1e-6
        )
        assert (tmp_path / "inference" / "bbox_iou_sweep.json").is_file()


def test_coco_evaluator_agrees_with_detectron2_on_shared_metrics(coco_files, tmp_path):
    name, inputs, outputs = registered_predictions(coco_files, tmp_path)
    ours, reference = COCOIoUSweepEvaluator(name, distributed=False), COCOEvaluator(name, distributed=False)
    for evaluator in (ours, reference):
        evaluator.reset()
        evaluator.process(inputs, outputs)
    sweep, standard = ours.evaluate()["bbox_iou"], reference.evaluate()["bbox"]
    assert sweep["AP"] == pytest.approx(standard["AP"])
    assert sweep["AP50"] == pytest.approx(standard["AP50"])
    assert sweep["AP-car"] == pytest.approx(standard["AP-car"])
    np.testing.assert_allclose([sweep[f"AP{round(t * 100)}"] for t in IOU_SWEEP], expected_overall(coco_ap), atol=1e-6)
    assert sweep["AP80-dog"] == pytest.approx(0.0) and sweep["AP60-dog"] == pytest.approx(coco_ap(0.5))


def write_voc(root, gt, split="test"):
    """The design as a Pascal VOC directory (1-based inclusive pixel boxes)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for image in gt["images"]:
        objects = "".join(
            f"<object><name>{names[a['category_id']]}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>100</xmax><ymax>100</ymax>"
            f"</bndbox></object>"
            for a in gt["annotations"]
            if a["image_id"] == image["id"]
        )
        (root / "Annotations" / f"im{image['id']}.xml").write_text(f"<annotation>{objects}</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(f"im{i['id']}" for i in gt["images"]))


@pytest.fixture
def voc_dataset(tmp_path):
    """The design registered as a Pascal VOC 2007 dataset, and an evaluator's feeding of it."""
    gt, results = build_design()
    write_voc(tmp_path / "voc", gt)
    name = f"iou_sweep_voc_{tmp_path.name}"
    register_pascal_voc(name, str(tmp_path / "voc"), "test", 2007, class_names=list(DESIGN))
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"  # as Detectron2's builtin VOC datasets
    contiguous = {cat: i for i, (cat, _) in enumerate(DESIGN.values())}

    def feed(evaluator):
        evaluator.reset()
        for r in results:
            x, y, w, h = r["bbox"]
            inst = Instances((120, 120))
            inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
            inst.scores = torch.tensor([r["score"]])
            inst.pred_classes = torch.tensor([contiguous[r["category_id"]]])
            evaluator.process([{"image_id": f"im{r['image_id']}"}], [{"instances": inst}])
        return evaluator.evaluate()

    return name, feed


@pytest.fixture
def voc_sweeps(voc_dataset):
    name, feed = voc_dataset
    return feed(PascalVOCIoUSweepEvaluator(name))


@pytest.mark.parametrize("sweep", [False, True])
def test_trainer_runs_the_voc_sweep_beside_detectron2s_evaluator(voc_dataset, cfg, sweep):
    """TEST.IOU_SWEEP adds the sweep to Detectron2's VOC AP / AP50 / AP75, which stays."""
    from detpre.engine.trainer import DetpreTrainer

    name, feed = voc_dataset
    cfg.TEST.IOU_SWEEP = sweep
    results = feed(DetpreTrainer.build_evaluator(cfg, name))
    assert set(results) == ({"bbox", "bbox_iou_voc07", "bbox_iou_voc_area"} if sweep else {"bbox"})
    assert set(results["bbox"]) == {"AP", "AP50", "AP75"}
    if sweep:  # a VOC2007 dataset: Detectron2's AP50 is 11-point, and the design has no tied scores
        assert results["bbox"]["AP50"] == pytest.approx(results["bbox_iou_voc07"]["AP50"])
        assert results["bbox"]["AP"] == pytest.approx(results["bbox_iou_voc07"]["AP"])


def test_voc_area_and_11_point_ap_at_each_iou(voc_sweeps):
    area, voc07 = voc_sweeps["bbox_iou_voc_area"], voc_sweeps["bbox_iou_voc07"]
    for name, (_, widths) in DESIGN.items():
        got_area = [area[f"AP{round(t * 100)}-{name}"] for t in IOU_SWEEP]
        got_07 = [voc07[f"AP{round(t * 100)}-{name}"] for t in IOU_SWEEP]
        np.testing.assert_allclose(got_area, [100 * recall_at(widths, t) for t in IOU_SWEEP], atol=1e-6)
        np.testing.assert_allclose(got_07, expected(voc07_ap, widths), atol=1e-6)
    # The two definitions differ exactly where recall is strictly between 0 and 1: car at 0.5
    # has R = 3/4, area 75 but 11-point 8/11 (recall points 0..0.7); dog at 0.3 has R = 1/2,
    # area 50 but 11-point 6/11.
    assert area["AP50-car"] == pytest.approx(75.0) and voc07["AP50-car"] == pytest.approx(800 / 11)
    assert area["AP30-dog"] == pytest.approx(50.0) and voc07["AP30-dog"] == pytest.approx(600 / 11)
    assert area["AP10-car"] == pytest.approx(100.0) and voc07["AP10-car"] == pytest.approx(100.0)


def test_coco_json_through_voc_rules_matches_the_voc_evaluator(coco_files, voc_sweeps):
    gt_path, _, results = coco_files
    sweeps = coco_voc_iou_sweep(load_coco(gt_path), results)
    for metric in ("voc07", "voc_area"):
        from_coco, from_voc = sweeps[metric].to_dict(), voc_sweeps[f"bbox_iou_{metric}"]
        assert from_coco.keys() == from_voc.keys()
        np.testing.assert_allclose(list(from_coco.values()), list(from_voc.values()), atol=1e-6)


def test_a_class_without_ground_truth_is_nan_and_left_out_of_the_mean(tmp_path):
    gt, results = build_design()
    gt["categories"].append({"id": 11, "name": "bird"})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    sweep = coco_iou_sweep(load_coco(path), results)
    assert np.isnan(sweep.per_class["bird"]).all()
    np.testing.assert_allclose(sweep.ap, expected_overall(coco_ap), atol=1e-6)
    nothing = coco_iou_sweep(load_coco(path), [])
    assert nothing.ap[0] == 0.0 and np.isnan(nothing.per_class["bird"]).all()


def test_cli_on_results_json_and_inference_dir_writes_table_json_and_plot(coco_files, tmp_path, capsys):
    gt_path, res_path, results = coco_files
    inference = tmp_path / "run_b" / "inference"
    inference.mkdir(parents=True)
    worse = [dict(r, bbox=[r["bbox"][0], r["bbox"][1], r["bbox"][2] * 0.9, r["bbox"][3]]) for r in results]
    (inference / "coco_instances_results.json").write_text(json.dumps(worse))
    (inference / "ds_coco_format.json").write_text(gt_path.read_text())  # as COCOEvaluator leaves it
    plot, out = tmp_path / "ap_vs_iou.png", tmp_path / "ap.json"
    code = ap_vs_iou_main(
        [
            "--gt",
            str(gt_path),
            "--results",
            f"a={res_path}",
            "--results",
            str(inference),
            "--voc",
            "--plot",
            str(plot),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert set(report) == {"a", "run_b"} and set(report["a"]) == {"coco", "voc07", "voc_area"}
    direct = coco_iou_sweep(load_coco(gt_path), results).to_dict()
    assert report["a"]["coco"]["AP70"] == pytest.approx(direct["AP70"])
    # Narrower boxes (IoU x 0.9) lose AP at high thresholds only.
    assert report["run_b"]["coco"]["AP10"] == pytest.approx(report["a"]["coco"]["AP10"])
    assert report["run_b"]["coco"]["AP90"] < report["a"]["coco"]["AP90"]
    assert "a (voc07)" in capsys.readouterr().out
    # Without --gt, the inference dir's own *_coco_format.json is used.
    assert ap_vs_iou_main(["--results", str(inference)]) == 0


def test_cli_reports_bad_input_by_name(coco_files, tmp_path, capsys):
    gt_path, res_path, _ = coco_files
    assert ap_vs_iou_main(["--gt", str(gt_path), "--results", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps([{"image_id": 999, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    assert ap_vs_iou_main(["--gt", str(gt_path), "--results", str(foreign)]) == 2
    assert "999" in capsys.readouterr().err


def test_cli_names_runs_by_their_folder_and_refuses_duplicates(coco_files, tmp_path, capsys):
    """Two runs evaluated on one dataset: OUTPUT_DIR/inference/<dataset>/ of each keeps its run's name."""
    gt_path, _, results = coco_files
    folders = []
    for run in ("scratch", "imagenet"):
        folder = tmp_path / run / "inference" / "coco_val"
        folder.mkdir(parents=True)
        (folder / "coco_instances_results.json").write_text(json.dumps(results))
        folders.append(folder)
    out = tmp_path / "ap.json"
    assert (
        ap_vs_iou_main(
            [
                "--gt",
                str(gt_path),
                "--results",
                str(folders[0]),
                "--results",
                str(folders[1] / "coco_instances_results.json"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert set(json.loads(out.read_text())) == {"scratch", "imagenet"}
    capsys.readouterr()
    assert ap_vs_iou_main(["--gt", str(gt_path), "--results", f"x={folders[0]}", "--results", f"x={folders[1]}"]) == 2
    assert "two --results are named 'x'" in capsys.readouterr().err


# ------------------------------------------------------- VOC rules: order-free, exact boxes


def synthetic_voc(seed: int, decimals: int = 0):
    """A seeded VOC-style set: 60 images, 2 classes, integer ground-truth boxes (some
    difficult), detections jittered around them and a few anywhere. ``decimals`` > 0 rounds
    the scores, so that equal scores, true and false positives among them, are common."""
    rng = np.random.default_rng(seed)
    gt, dt = [], []
    for image in range(60):
        for _ in range(rng.integers(0, 4)):
            label, (x1, y1), (w, h) = int(rng.integers(0, 2)), rng.integers(1, 200, 2), rng.integers(10, 80, 2)
            gt.append((image, label, x1, y1, x1 + w, y1 + h, rng.random() < 0.1))
            for _ in range(rng.integers(0, 4)):
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                dt.append((image, label, rng.random(), *(np.array([x1, y1, x1 + w, y1 + h]) + jitter)))
        for _ in range(rng.integers(0, 2)):
            x1, y1 = rng.uniform(1, 200, 2)
            dt.append((image, int(rng.integers(0, 2)), rng.random() / 2, x1, y1, x1 + 40, y1 + 60))
    gt, dt = np.array(gt, dtype=np.float64), np.array(dt, dtype=np.float64)
    if decimals:
        dt[:, 2] = np.round(dt[:, 2], decimals)
    return (
        VOCGroundTruth(gt[:, 0].astype(int), gt[:, 1].astype(int), gt[:, 2:6], gt[:, 6].astype(bool)),
        VOCDetections(dt[:, 0].astype(int), dt[:, 1].astype(int), dt[:, 3:7], dt[:, 2]),
    )


def detectron2_voc_eval(tmp_path, gt: VOCGroundTruth, dt: VOCDetections, order=None):
    """Detectron2's voc_eval on the same boxes and scores written to its files at full
    precision (repr), detections in ``order``: table[threshold, class] of (11-point, area)."""
    from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_ap, voc_eval

    (tmp_path / "ann").mkdir(parents=True, exist_ok=True)
    images = range(int(max(gt.image.max(), dt.image.max())) + 1)
    for image in images:
        objects = "".join(
            f"<object><name>c{k}</name><pose>x</pose><truncated>0</truncated><difficult>{int(d)}</difficult>"
            f"<bndbox><xmin>{int(b[0])}</xmin><ymin>{int(b[1])}</ymin><xmax>{int(b[2])}</xmax>"
            f"<ymax>{int(b[3])}</ymax></bndbox></object>"
            for i, k, b, d in zip(*gt)
            if i == image
        )
        (tmp_path / "ann" / f"{image}.xml").write_text(f"<annotation>{objects}</annotation>")
    (tmp_path / "set.txt").write_text("\n".join(map(str, images)))
    order = np.arange(len(dt.score)) if order is None else order
    for k in range(2):
        rows = [i for i in order if dt.label[i] == k]
        (tmp_path / f"c{k}.txt").write_text(
            "\n".join(f"{dt.image[i]} {dt.score[i]!r} " + " ".join(map(repr, dt.boxes[i].tolist())) for i in rows)
        )
    table = np.zeros((len(IOU_SWEEP), 2, 2))
    for i, t in enumerate(IOU_SWEEP):
        for k in range(2):
            rec, prec, _ = voc_eval(
                str(tmp_path / "{}.txt"),
                str(tmp_path / "ann" / "{}.xml"),
                str(tmp_path / "set.txt"),
                f"c{k}",
                ovthresh=t,
            )
            table[i, k] = 100 * voc_ap(rec, prec, True), 100 * voc_ap(rec, prec, False)
    parse_rec.cache_clear()  # keyed by path, and tmp_path's files go
    return table


def sweep_table(gt, dt):
    sweeps = voc_iou_sweep(gt, dt, ["c0", "c1"])
    return np.stack(
        [np.stack([sweeps[m].per_class[c] for m in ("voc07", "voc_area")], axis=1) for c in ("c0", "c1")], axis=1
    )


def test_voc_rules_equal_detectron2s_voc_eval_without_ties(tmp_path):
    gt, dt = synthetic_voc(0)
    assert len(np.unique(dt.score)) == len(dt.score) and gt.difficult.any()
    ours = sweep_table(gt, dt)
    assert 0 < ours.min() and ours.max() < 100  # not a degenerate set
    np.testing.assert_allclose(ours, detectron2_voc_eval(tmp_path, gt, dt), rtol=0, atol=1e-9)


def test_the_same_detections_in_any_order_give_the_same_ap_at_every_iou(tmp_path):
    gt, dt = synthetic_voc(1, decimals=2)
    assert len(np.unique(dt.score)) < 0.5 * len(dt.score)
    reference = sweep_table(gt, dt)
    rng = np.random.default_rng(0)
    theirs = []
    for k in range(3):
        order = rng.permutation(len(dt.score))
        shuffled = VOCDetections(*(a[order] for a in dt))
        np.testing.assert_array_equal(sweep_table(gt, shuffled), reference)
        theirs.append(detectron2_voc_eval(tmp_path / str(k), gt, dt, order))
    # The ties matter on this set: Detectron2's unstable sort gives another AP in another order.
    assert any(np.abs(t - theirs[0]).max() > 0.1 for t in theirs[1:])


def test_coco_boxes_are_not_rounded_to_the_pixel_under_voc_rules(tmp_path):
    # Ground truth 10.4 px wide, a detection 11.5 px wide over it: IoU 10.4 / 11.5 = 0.904, a
    # hit at 0.9. Rounded to the pixel, the object would be 10 px wide: IoU 0.87, a miss.
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 50, "width": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.0, 3.0, 10.4, 20.0], "area": 208.0, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 1, "bbox": [2.0, 3.0, 11.5, 20.0], "score": 0.9}]
    sweeps = coco_voc_iou_sweep(load_coco(path), results)
    for metric in ("voc07", "voc_area"):
        assert sweeps[metric].at(0.9) == pytest.approx(100.0), metric
    assert coco_iou_sweep(load_coco(path), results).at(0.9) == pytest.approx(100.0)
