"""Image-domain pre-training through detpre's trainer on the demo data: metrics logged, and a run
resumed from a checkpoint ends where the uninterrupted run ends (queues, step count, EMA, data)."""

import json
import shutil
import uuid

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from detpre import add_detpre_config
from detpre.data.datasets.demo import register_demo
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.engine.trainer import DetpreTrainer

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "Demo" / "image_domain_densecl_R18_FPN.yaml"


@pytest.fixture(scope="module")
def unlabeled(demo_root):
    prefix = f"ssl_{uuid.uuid4().hex[:8]}"
    register_demo(prefix, str(demo_root))
    name = f"{prefix}_train_16_s0"
    assert ensure_subset_registered(name)
    yield name
    for registered in [n for n in DatasetCatalog.list() if n.startswith(prefix)]:
        DatasetCatalog.remove(registered)
        MetadataCatalog.remove(registered)


def train(dataset: str, output_dir, resume: bool = False) -> DetpreTrainer:
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SEED", "3", "OUTPUT_DIR", str(output_dir), "DATALOADER.NUM_WORKERS", "0"]
        + ["DATASETS.TRAIN", f"('{dataset}',)", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "4"]
        + ["SOLVER.CHECKPOINT_PERIOD", "2", "INPUT.IMAGE_DOMAIN.CROP_SIZE", "64", "LOG_PERIOD", "1"]
        + ["MODEL.IMAGE_DOMAIN.QUEUE_SIZE", "8", "MODEL.IMAGE_DOMAIN.HIDDEN_DIM", "32"]
    )
    cfg.freeze()
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_a_resumed_run_ends_where_the_uninterrupted_one_ends(unlabeled, tmp_path):
    train(unlabeled, tmp_path / "full")
    logged = [json.loads(line) for line in (tmp_path / "full" / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in logged] == [0, 1, 2, 3]
    for key in ("loss_global_contrast", "loss_dense_contrast", "image_domain/queue_fill", "image_domain/dense_top1"):
        assert key in logged[-1], key
    assert logged[-1]["image_domain/queue_fill"] == 1.0
    # "Killed" after the checkpoint of iteration 1: resume from it alone.
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "full" / "model_0000001.pth", tmp_path / "resumed")
    (tmp_path / "resumed" / "last_checkpoint").write_text("model_0000001.pth")
    resumed = train(unlabeled, tmp_path / "resumed", resume=True)
    assert resumed.start_iter == 2
    full = torch.load(tmp_path / "full" / "model_final.pth", map_location="cpu")["model"]
    again = torch.load(tmp_path / "resumed" / "model_final.pth", map_location="cpu")["model"]
    assert full.keys() == again.keys() and int(full["steps"]) == 4
    for key in full:
        assert torch.equal(full[key], again[key]), key
