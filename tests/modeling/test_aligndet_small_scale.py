"""AlignDet on detpre's demo data, a smoke check of the whole path: SoCo proposals written as
AlignDet's COCO json, box-domain pre-training from that file through the real tools and
trainer, conversion, fine-tuning; and the five-arm experiment script at a few iterations.

The experiment itself (five arms, paired seeds, numbers in README / BENCHMARKS.md) is
``benchmarks/aligndet_small_scale.py``: too long for the suite.
"""

import json
import uuid

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

from detpre import add_detpre_config
from detpre.data.datasets.demo import register_demo
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.engine.trainer import DetpreTrainer
from detpre.utils.metrics import read_metrics

from conftest import REPO, load_benchmark, load_tool

convert_pretrained = load_tool("convert_pretrained")
precompute_proposals = load_tool("precompute_proposals")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIGS = REPO / "configs" / "AlignDet" / "Demo"
PRETRAIN = CONFIGS / "pretrain_faster_rcnn_R18_FPN.yaml"
FINETUNE = CONFIGS / "finetune_faster_rcnn_R18_FPN.yaml"
SHORT = ["SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2"]


@pytest.fixture(scope="module")
def demo(demo_root):
    """The session's demo data registered as ``<prefix>_train`` / ``<prefix>_val``."""
    prefix = f"aligndet_{uuid.uuid4().hex[:8]}"
    register_demo(prefix, str(demo_root))
    yield prefix
    for name in [n for n in DatasetCatalog.list() if n.startswith(prefix)]:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _dataset(name: str) -> str:
    assert ensure_subset_registered(name), name
    return name


def _trainer(path, seed: int, output_dir, opts) -> DetpreTrainer:
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SEED", str(seed), "OUTPUT_DIR", str(output_dir), "DATALOADER.NUM_WORKERS", "0", *opts]
    )
    cfg.freeze()
    seed_all_rng(seed)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def test_pretrain_from_a_proposal_json_convert_finetune_through_the_tools(demo, tmp_path, capsys):
    unlabeled = _dataset(f"{demo}_train_8_s1")
    labeled = _dataset(f"{demo}_train_8_s0")
    val = _dataset(f"{demo}_val_8_s0")
    proposals = str(tmp_path / "proposals.json")  # AlignDet's format: a COCO json, one category
    assert precompute_proposals.main(["--dataset", unlabeled, "--output", proposals, "--workers", "1"]) == 0
    assert "recall@0.5:" in capsys.readouterr().out
    assert json.load(open(proposals))["categories"][0]["name"] == "selective_search"

    opts = ["DATASETS.TRAIN", f"('{unlabeled}',)", "DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposals}',)", *SHORT]
    _trainer(PRETRAIN, 0, tmp_path / "pre", opts).train()
    logged = read_metrics(str(tmp_path / "pre"))
    assert [m["iteration"] for m in logged if "loss_box_contrast" in m] == [0, 2]  # the first step, and the last
    for key in (
        "box_domain/momentum",
        "box_domain/positives_per_image",
        "box_domain/embedding_spread",
        "loss_rpn_cls",
        "loss_box_reg",
    ):
        assert key in logged[-1], key

    report = str(tmp_path / "report.json")
    args = [str(tmp_path / "pre" / "model_final.pth"), str(tmp_path / "detector.pth"), "--config-file", str(FINETUNE)]
    assert convert_pretrained.main([*args, "--report", report, "MODEL.DEVICE", "cpu"]) == 0
    report = json.load(open(report))
    assert "roi_heads.box_predictor.cls_score.weight" in report["reinitialized"]
    assert "roi_heads.box_predictor.bbox_pred.weight" in report["reinitialized"]  # as AlignDet, unless --keep-heads
    assert "backbone.fpn_output2.weight" in report["kept"]
    weights = torch.load(tmp_path / "detector.pth", map_location="cpu")["model"]

    opts = ["DATASETS.TRAIN", f"('{labeled}',)", "DATASETS.TEST", f"('{val}',)", *SHORT]
    trainer = _trainer(FINETUNE, 0, tmp_path / "ft", [*opts, "MODEL.WEIGHTS", str(tmp_path / "detector.pth")])
    loaded = trainer.model.state_dict()
    for key in report["kept"]:
        assert torch.equal(loaded[key], weights[key]), key
    trainer.train()
    assert DetpreTrainer.test(trainer.cfg, trainer.model)["bbox"]["AP"] >= 0


def test_the_five_arm_experiment_script_runs(demo, tmp_path, capsys):
    script = load_benchmark("aligndet_small_scale")
    argv = ["--seeds", "0", "--pretrain-iters", "2", "--finetune-iters", "2", "--output-dir", str(tmp_path)]
    argv += ["--unlabeled", _dataset(f"{demo}_train_8_s1"), "--labeled", _dataset(f"{demo}_train_8_s0")]
    argv += ["--val", _dataset(f"{demo}_val_8_s0")]
    assert script.main(argv) == 0
    results = json.load(open(tmp_path / "results.json"))
    assert set(results["per_seed"]["0"]) == set("abcde")
    assert {"recall@0.5", "recall@0.7", "boxes_per_image"} <= set(results["proposals"])
    assert "AP (c) - (b), paired" in capsys.readouterr().out
    assert not list(tmp_path.glob("**/model_final.pth")) + list(tmp_path.glob("**/detector.pth"))  # deleted once used
