"""AlignDet on detpre's demo data: the whole path through the real tools and trainer, and the
honest small-scale check (box-domain pre-training on unlabeled images, then fine-tuning on
a small labeled fraction, against the same fine-tuning without it).

Both use the configs under ``configs/AlignDet/Demo`` with the session's demo dataset (see
``conftest.demo_root``) registered under a private name; numbers go to BENCHMARKS.md.
"""

import json
import statistics
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

from detpre import add_detpre_config
from detpre.data.datasets.demo import register_demo
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.data.proposal_files import SearchSettings, compute_proposals, ground_truth_boxes
from detpre.data.proposals import ProposalFilter, proposal_coverage
from detpre.engine.trainer import DetpreTrainer
from detpre.utils.metrics import read_metrics

from conftest import REPO, load_tool

convert_pretrained = load_tool("convert_pretrained")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIGS = REPO / "configs" / "AlignDet" / "Demo"
PRETRAIN = CONFIGS / "pretrain_faster_rcnn_R18_FPN.yaml"
FINETUNE = CONFIGS / "finetune_faster_rcnn_R18_FPN.yaml"


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


def _config(path, seed: int, output_dir, opts=()):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SEED", str(seed), "OUTPUT_DIR", str(output_dir), "DATALOADER.NUM_WORKERS", "0", *opts]
    )
    return cfg


def _proposals(unlabeled: str, output) -> str:
    dicts = DatasetCatalog.get(unlabeled)
    props = compute_proposals(dicts, str(output), SearchSettings(max_size=192, filter=ProposalFilter(top_k=50)))
    coverage = proposal_coverage(props["boxes"], [ground_truth_boxes(d) for d in dicts], 0.5)
    print(
        f"demo proposals: {np.mean([len(b) for b in props['boxes']]):.1f}/image, cover "
        f"{coverage['covered']}/{coverage['total']} objects at IoU 0.5"
    )
    return str(output)


def _pretrain(unlabeled: str, proposals: str, seed: int, output_dir, opts=()) -> DetpreTrainer:
    cfg = _config(
        PRETRAIN,
        seed,
        output_dir,
        ["DATASETS.TRAIN", f"('{unlabeled}',)", "DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposals}',)", *opts],
    )
    cfg.freeze()
    seed_all_rng(seed)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def _finetuner(labeled: str, weights: str, seed: int, output_dir, opts=()) -> DetpreTrainer:
    """A fine-tuning trainer loaded from ``weights`` ("" = the same random init, seeded)."""
    cfg = _config(
        FINETUNE,
        seed,
        output_dir,
        ["DATASETS.TRAIN", f"('{labeled}',)", "DATASETS.TEST", "()", "MODEL.WEIGHTS", weights, *opts],
    )
    cfg.freeze()
    seed_all_rng(seed)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def _train_and_evaluate(trainer: DetpreTrainer, val: str) -> dict:
    """Train, then COCO bbox metrics on ``val``."""
    trainer.train()
    evaluation = trainer.cfg.clone()
    evaluation.defrost()
    evaluation.DATASETS.TEST = (val,)
    return DetpreTrainer.test(evaluation, trainer.model)["bbox"]


def _convert(checkpoint, output) -> dict:
    report = str(output) + ".json"
    args = [str(checkpoint), str(output), "--config-file", str(FINETUNE), "--report", report, "MODEL.DEVICE", "cpu"]
    assert convert_pretrained.main(args) == 0
    with open(report) as f:
        return json.load(f)


def test_pretrain_convert_finetune_through_the_tools_and_trainer(demo, tmp_path):
    unlabeled = _dataset(f"{demo}_train_8_s1")
    labeled = _dataset(f"{demo}_train_8_s0")
    val = _dataset(f"{demo}_val_8_s0")
    proposals = _proposals(unlabeled, tmp_path / "proposals.pkl")
    short = ["SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2"]
    _pretrain(unlabeled, proposals, 0, tmp_path / "pre", short)
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

    report = _convert(tmp_path / "pre" / "model_final.pth", tmp_path / "detector.pth")
    assert "roi_heads.box_predictor.cls_score.weight" in report["reinitialized"]
    assert "backbone.fpn_output2.weight" in report["kept"]
    weights = torch.load(tmp_path / "detector.pth", map_location="cpu")["model"]

    trainer = _finetuner(labeled, str(tmp_path / "detector.pth"), 0, tmp_path / "ft", short)
    loaded = trainer.model.state_dict()
    for key in report["kept"]:
        assert torch.equal(loaded[key], weights[key]), key
    assert _train_and_evaluate(trainer, val)["AP"] >= 0


SEEDS = (0, 1, 2)


def test_box_domain_pretraining_beats_the_same_fine_tuning_without_it(demo, tmp_path):
    """Seeded, averaged over seeds; both arms: same backbone init, data, schedule, recipe."""
    unlabeled = _dataset(f"{demo}_train_200_s0")
    labeled = _dataset(f"{demo}_train_50_s0")
    val = f"{demo}_val"
    proposals = _proposals(unlabeled, tmp_path / "proposals.pkl")
    results = {"aligndet": [], "scratch": []}
    for seed in SEEDS:
        _pretrain(unlabeled, proposals, seed, tmp_path / f"pre{seed}")
        _convert(tmp_path / f"pre{seed}" / "model_final.pth", tmp_path / f"detector{seed}.pth")
        for arm, weights in (("aligndet", str(tmp_path / f"detector{seed}.pth")), ("scratch", "")):
            bbox = _train_and_evaluate(_finetuner(labeled, weights, seed, tmp_path / f"{arm}{seed}"), val)
            results[arm].append((bbox["AP"], bbox["AP50"]))
    for arm, rows in results.items():
        print(
            f"{arm:9s} AP "
            + " ".join(f"{ap:5.2f}" for ap, _ in rows)
            + f"  mean {statistics.mean(a for a, _ in rows):5.2f}"
            f" | AP50 "
            + " ".join(f"{ap50:5.2f}" for _, ap50 in rows)
            + f"  mean {statistics.mean(b for _, b in rows):5.2f}"
        )
    mean_ap = {arm: statistics.mean(ap for ap, _ in rows) for arm, rows in results.items()}
    assert mean_ap["aligndet"] > mean_ap["scratch"], results
